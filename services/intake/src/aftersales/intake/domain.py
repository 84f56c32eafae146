"""Intake's rules: ticket ids, customer identity, warranty, alert-storm windows, the ticket lifecycle as
seen from other services' events, timeline entries and list cursors. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from aftersales.shared.contracts.requests import CustomerIn, ProductIn, TicketRequest
from aftersales.shared.errors import InvalidRequest


class TicketStatus(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    PENDING_CUSTOMER = "pending_customer"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TicketStatus.CLOSED, TicketStatus.CANCELLED})
# A ticket in one of these can no longer be cancelled, and no longer collects storm alerts.
DONE = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED, TicketStatus.CANCELLED})
REOPENABLE = frozenset({TicketStatus.RESOLVED, TicketStatus.CLOSED})


# ---------------------------------------------------------------- identities


def new_ticket_id() -> str:
    """Return a fresh ticket id for a request without an idempotency key."""
    return f"T-{uuid.uuid4().hex[:20]}"


def keyed_ticket_id(namespace: str, key: str) -> str:
    """Return the ticket id a (caller, idempotency key) pair always maps to, so replays collide."""
    return f"T-{_digest(f'{namespace}|{key}')[:20]}"


def dedupe_key(namespace: str, key: str) -> str:
    """Return the stored form of an idempotency key, scoped to its caller."""
    return _digest(f"{namespace}|{key}")[:32]


def customer_id_for(customer: CustomerIn, key: bytes) -> str:
    """Return the customer's id: the given one, else a stable id keyed with `key` (HMAC-SHA256) from the
    normalized e-mail or phone, so nobody without the key can compute a customer's id from a phone."""
    if customer.id is not None:
        return customer.id
    return f"C-{hmac.new(key, _identity(customer).encode(), hashlib.sha256).hexdigest()[:20]}"


def legacy_customer_id(customer: CustomerIn) -> str:
    """Return the id the platform used before ids were keyed (plain SHA-256), for the one-off re-keying."""
    return f"C-{_digest(_identity(customer))[:16]}"


def _identity(customer: CustomerIn) -> str:
    if customer.email is not None:
        return f"email:{customer.email.strip().lower()}"
    if customer.phone is not None:
        return f"phone:{customer.phone}"  # already E.164-normalized by the request model
    # the request model refuses this; keep the function total
    raise InvalidRequest("a new customer needs a phone or an e-mail", field="customer")


def request_fingerprint(request: TicketRequest) -> str:
    """Return a hash of a request's content, to tell a true replay from a reused idempotency key."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":")))[:32]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- warranty


def add_months(day: date, months: int) -> date:
    """Return `day` moved by `months` calendar months, clamped to the end of a shorter month."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def under_warranty(product: ProductIn, today: date) -> bool | None:
    """Return whether the product is under warranty on `today`; None when the purchase date is unknown."""
    if product.purchase_date is None:
        return None
    if product.purchase_date > today:
        return True  # a purchase date in the future is a typo, not an expired warranty
    return today <= add_months(product.purchase_date, product.warranty_months)


# ---------------------------------------------------------------- alert storms


def storm_key(serial: str, fault_code: str) -> str:
    """Return the key that groups IoT alerts of one device and one fault."""
    return f"storm:{serial}|{fault_code}"


def released_storm_key(ticket_id: str) -> str:
    """Return the storm key of a ticket that no longer collects alerts (unique, never matched)."""
    return f"done:{ticket_id}"


def stored_precision(moment: datetime) -> datetime:
    """Return `moment` cut to whole milliseconds, the precision MongoDB keeps, so edges compare alike."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def joins_storm(last_seen: datetime, observed_at: datetime, window_s: float) -> bool:
    """Return True when an alert observed at `observed_at` belongs to the storm last seen at `last_seen`.

    The window slides: each alert keeps the storm open for another `window_s` seconds. An alert that
    arrives late (observed before the last one) still joins; one exactly at the edge joins too.
    """
    return observed_at <= last_seen + timedelta(seconds=window_s)


# ---------------------------------------------------------------- lifecycle from other services' events


@dataclass(frozen=True, slots=True)
class Transition:
    """What one downstream event does to a ticket: its new status (None = unchanged) and technician."""

    status: TicketStatus | None = None
    technician_id: str | None = None


def short_type(ce_type: str) -> str:
    """Return `assignment.assigned` for `aftersales.assignment.assigned.v1`."""
    parts = ce_type.split(".")
    if len(parts) >= 4 and parts[0] == "aftersales":
        return ".".join(parts[1:-1])
    return ce_type


def source_service(ce_source: str) -> str:
    """Return `routing` for `/aftersales/routing`."""
    return ce_source.rstrip("/").rsplit("/", 1)[-1] or ce_source


_ASSIGNMENT_STATUS: dict[str, TicketStatus] = {
    "assignment.assigned": TicketStatus.ASSIGNED,
    "assignment.reassigned": TicketStatus.ASSIGNED,
    "assignment.accepted": TicketStatus.IN_PROGRESS,
    "assignment.started": TicketStatus.IN_PROGRESS,
    "assignment.pending": TicketStatus.PENDING_CUSTOMER,
    "assignment.escalated": TicketStatus.ESCALATED,
    "assignment.resolved": TicketStatus.RESOLVED,
}


def assignment_transition(current: TicketStatus, kind: str, data: dict[str, Any]) -> Transition:
    """Return what an assignment event does to a ticket in status `current`.

    A closed or cancelled ticket keeps its status (its events still go on the timeline).
    """
    target = _ASSIGNMENT_STATUS.get(kind)
    technician = data.get("technician_id") or data.get("to_technician_id")
    if target is None or current in TERMINAL:
        return Transition(technician_id=None)
    return Transition(status=target, technician_id=technician if isinstance(technician, str) else None)


def can_reopen(current: TicketStatus) -> bool:
    return current in REOPENABLE


def can_close_confirmed(current: TicketStatus) -> bool:
    return current is TicketStatus.RESOLVED


def followup_action(kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """Return what a follow-up event asks of the ticket: reopen it, close it, or nothing (None)."""
    if kind == "followup.reopen-requested":
        reason = data.get("reason")
        return {"action": "reopen", "reason": str(reason or "customer reports the problem is not resolved")}
    if kind == "followup.completed" and data.get("outcome") == "confirmed_resolved":
        return {"action": "close", "reason": "confirmed_resolved"}
    return None


def may_overtake(current: TicketStatus) -> bool:
    """True when a follow-up outcome may have overtaken the resolution it refers to.

    Follow-ups come after a resolution, but on another topic than routing's `resolved`, so intake can
    read them first; such an outcome waits on the ticket and applies when the resolution arrives.
    """
    return current not in TERMINAL and current not in (TicketStatus.RESOLVED, TicketStatus.REOPENED)


def can_cancel(current: TicketStatus) -> bool:
    return current not in DONE


def can_customer_reply(current: TicketStatus) -> bool:
    return current is TicketStatus.PENDING_CUSTOMER


# Only these scalar fields of a downstream event are copied onto the timeline: ids and outcomes,
# never free text that might carry personal data.
TIMELINE_FIELDS = (
    "technician_id",
    "from_technician_id",
    "to_technician_id",
    "grid_id",
    "round",
    "via",
    "tier",
    "level",
    "reason",
    "resolution_code",
    "clock",
    "threshold_pct",
    "visit_id",
    "kind",
    "outcome",
    "survey_id",
    "csat",
    "nps",
    "complaint_id",
    "state",
    "previous_state",
)


def timeline_entry(
    *, at: datetime, kind: str, source: str, data: dict[str, Any], event_id: str
) -> dict[str, Any]:
    """Return one timeline entry: when, what (short type), which service, and a few summary fields."""
    entry: dict[str, Any] = {"at": at.astimezone(UTC), "type": kind, "source": source, "event_id": event_id}
    for name in TIMELINE_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            entry[name] = value[:200]
        elif isinstance(value, int | float):
            entry[name] = value
    return entry


# ---------------------------------------------------------------- list cursors


MAX_PAGE = 100


def encode_cursor(created_at: datetime, ticket_id: str) -> str:
    """Return an opaque cursor pointing after the ticket (created_at, id)."""
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), ticket_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Return the (created_at, id) inside a cursor, or raise InvalidRequest naming `cursor`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_text, ticket_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None or not isinstance(ticket_id, str) or len(ticket_id) > 100:
            raise ValueError("bad cursor")
        created_at = created_at.astimezone(UTC)  # the calendar's extremes overflow here, not in the query
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise InvalidRequest("cursor is not one this API returned", field="cursor") from None
    return created_at, ticket_id


# ---------------------------------------------------------------- ticket documents


def facts_of(ticket: dict[str, Any]) -> dict[str, Any]:
    """Return the TicketFacts fields of a stored ticket (what routing, follow-up and metrics need)."""
    product = ticket.get("product") or {}
    return {
        "ticket_id": ticket["_id"],
        "channel": ticket["channel"],
        "category": ticket["category"],
        "priority": ticket["priority"],
        "customer_id": ticket["customer_id"],
        "customer_tier": ticket.get("customer_tier", "standard"),
        "customer_timezone": ticket.get("customer_timezone", "UTC"),
        "region_code": ticket["region_code"],
        "device_type": product.get("device_type", "unknown"),
        "product_model": product.get("model"),
        "under_warranty": ticket.get("under_warranty"),
        "fault_code": ticket.get("fault_code"),
        "submitted_by": ticket.get("created_by"),
    }


def product_document(product: ProductIn) -> dict[str, Any]:
    """Return the stored form of a product (dates as ISO text: BSON has no date-only type)."""
    return {
        "device_type": product.device_type,
        "model": product.model,
        "serial": product.serial,
        "purchase_date": product.purchase_date.isoformat() if product.purchase_date else None,
        "warranty_months": product.warranty_months,
    }


def customer_profile(customer: CustomerIn) -> dict[str, Any]:
    """Return the profile fields a request gives about its customer (absent ones are left unchanged).
    The tier is not among them: it comes from the platform's own records (see `customers`)."""
    fields = {
        "name": customer.name,
        "phone": customer.phone,
        "email": customer.email,
        "region_code": customer.region_code,
        "address": customer.address,
        "timezone": customer.timezone,
    }
    return {k: v for k, v in fields.items() if v is not None}


# ---------------------------------------------------------------- what a channel may see of a ticket

# The timeline entries a channel (the customer's side) is shown, with time, type and source only:
# no technician ids, escalation levels, SLA clocks, grid ids or staff's free-text reasons.
CHANNEL_TIMELINE_TYPES = frozenset(
    {
        "ticket.created",
        "ticket.merged",
        "ticket.cancelled",
        "ticket.customer_replied",
        "assignment.assigned",
        "assignment.accepted",
        "assignment.started",
        "assignment.pending",
        "assignment.resolved",
        "followup.scheduled",
        "followup.completed",
        "feedback.survey-sent",
        "feedback.survey-submitted",
    }
)
# Ticket fields a channel is not shown (internal: who works on it, how it was classified).
CHANNEL_HIDDEN_FIELDS = ("technician_id", "last_technician_id", "matched_rules")


def channel_view(ticket: dict[str, Any]) -> dict[str, Any]:
    """Return a ticket as a channel may see it: internal fields dropped, the timeline reduced."""
    out = {k: v for k, v in ticket.items() if k not in CHANNEL_HIDDEN_FIELDS}
    if "timeline" in ticket:
        out["timeline"] = [
            {"at": e["at"], "type": e["type"], "source": e["source"]}
            for e in ticket["timeline"]
            if e.get("type") in CHANNEL_TIMELINE_TYPES
        ]
    return out
