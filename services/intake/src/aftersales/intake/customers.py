"""Customer records as the platform keeps them, and what a request may do to them (pure rules, no I/O).

- A channel may name an existing customer by `customer.id` only when it has served that customer before
  (it is in the record's `channels`); giving the customer's phone or e-mail instead (the id is then
  derived with a key only the platform has) links the channel to the customer.
- Tier and entitlement are the platform's records. A channel's request never sets a tier, its warranty
  period is the platform's standard one, and its priority hint is kept as a hint for staff to confirm,
  not applied. Supervisors and admins are trusted with all three.
- A request fills a customer's empty profile fields; it never overwrites a stored one, so a request that
  names a key account by id alone does not downgrade it. Only staff set a tier (a staff request that
  states one, `PUT .../tier`, `PATCH /v1/customers/{id}`); staff edit the profile through the customer API.
- Every change of a record is on its bounded change log (`history_entry`): when, who, which fields,
  never their values (contact data stays in the record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aftersales.intake import domain
from aftersales.intake.rules import Facts
from aftersales.shared.contracts.common import CustomerTier
from aftersales.shared.contracts.requests import CustomerIn, TicketRequest
from aftersales.shared.errors import Forbidden
from aftersales.shared.pii import mask_pii


def check_may_name(
    record: Mapping[str, Any] | None, customer: CustomerIn, *, caller: str, staff: bool
) -> None:
    """Raise Forbidden when a channel names by id a customer it has not served."""
    if staff or record is None or customer.id is None:
        return
    if caller not in record.get("channels", []):
        raise Forbidden(
            "customer.id names a customer this client has not served; identify the customer by phone "
            "or e-mail instead",
            field="customer.id",
        )


def platform_tier(record: Mapping[str, Any] | None) -> CustomerTier:
    """Return the tier the platform's record gives a customer (standard when there is none)."""
    value = (record or {}).get("tier")
    return CustomerTier(str(value)) if value in CustomerTier._value2member_map_ else CustomerTier.STANDARD


def effective_request(
    request: TicketRequest, record: Mapping[str, Any] | None, *, staff: bool, warranty_months: int
) -> TicketRequest:
    """Return the request as the platform judges it: the customer's tier from the record, and for a
    channel the standard warranty period. Staff may state a tier and a warranty period themselves."""
    customer, product = request.customer, request.product
    if not (staff and "tier" in customer.model_fields_set):
        customer = customer.model_copy(update={"tier": platform_tier(record)})
    if not staff:
        product = product.model_copy(update={"warranty_months": warranty_months})
    return request.model_copy(update={"customer": customer, "product": product})


def rule_facts(request: TicketRequest, *, under_warranty: bool | None, staff: bool) -> Facts:
    """Return what the classification rules see; a channel's priority hint is not among it."""
    facts = Facts.of(request, under_warranty=under_warranty)
    return facts if staff else dataclasses.replace(facts, priority_hint=None)


@dataclass(frozen=True, slots=True)
class CustomerNote:
    """What a ticket records about its customer (an idempotent create-or-refresh of the record).

    Staff's profile fields (and a tier staff stated) overwrite the record; a channel's only fill a new
    record, whose tier is then the standard one, and link the channel to the customer."""

    customer_id: str
    ticket_id: str
    product: Mapping[str, Any]  # the stored product, without the warranty period
    profile: Mapping[str, Any]  # the fields the request gives (absent ones are left unchanged)
    staff: bool
    stated_tier: CustomerTier | None  # a tier staff stated explicitly
    channel: str | None  # the channel (caller) to link; None for staff
    at: datetime
    by: str = ""  # the caller, for the record's change log


def note_of(
    request: TicketRequest,
    *,
    customer_id: str,
    ticket_id: str,
    caller: str,
    staff: bool,
    now: datetime,
) -> CustomerNote:
    """Return what a request records about its customer."""
    stated = staff and "tier" in request.customer.model_fields_set
    product = domain.product_document(request.product)
    return CustomerNote(
        customer_id=customer_id,
        ticket_id=ticket_id,
        product={k: v for k, v in product.items() if k != "warranty_months"},
        profile=domain.customer_profile(request.customer),
        staff=staff,
        stated_tier=request.customer.tier if stated else None,
        channel=None if staff else caller,
        at=now,
        by=caller,
    )


PROFILE_FIELDS = ("name", "phone", "email", "region_code", "address", "timezone")
HISTORY_KEPT = 100  # entries of a customer's change log kept and shown


def filled(record: Mapping[str, Any], note: CustomerNote) -> dict[str, Any]:
    """Return what a ticket's note changes in an existing record: the profile fields the record lacks,
    and the tier when staff stated one; never a stored value."""
    out = {k: v for k, v in note.profile.items() if record.get(k) in (None, "")}
    if note.stated_tier is not None and record.get("tier") != note.stated_tier.value:
        out["tier"] = note.stated_tier.value
    return out


def new_record(note: CustomerNote) -> dict[str, Any]:
    """Return the record a customer's first ticket (or the customer API) creates; its tier is the
    standard one unless staff said otherwise."""
    tier = note.stated_tier or CustomerTier.STANDARD
    record: dict[str, Any] = {
        "_id": note.customer_id,
        **note.profile,
        "tier": tier.value,
        "created_at": note.at,
        "updated_at": note.at,
        "version": 1,
        "history_seq": 1,
        "last_change": history_entry(0, "created", by=note.by, at=note.at, fields=[*note.profile, "tier"]),
    }
    if note.ticket_id:
        record["last_ticket_id"] = note.ticket_id
    if note.channel is not None:
        record["channels"] = [note.channel]
    return record


def history_entry(
    seq: int, change: str, *, by: str, at: datetime, fields: Any, tier: str | None = None
) -> dict[str, Any]:
    """Return one entry of a customer's change log: created, filled (a request filled empty fields),
    edited, tier_set or product_added; the field names changed, the tier (not contact data) when set."""
    entry: dict[str, Any] = {"seq": seq, "at": at, "change": change, "by": by, "fields": sorted(fields)}
    if tier is not None:
        entry["tier"] = tier
    return entry


def contact_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a customer record with its contact data masked (what a channel is shown)."""
    out = dict(record)
    for name in ("phone", "email"):
        if isinstance(out.get(name), str):
            out[name] = mask_pii(out[name])
    if out.get("address"):
        out["address"] = "***"
    return out
