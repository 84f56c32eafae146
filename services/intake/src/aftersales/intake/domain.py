"""Intake's domain: the `Ticket` aggregate and intake's own decisions on it (open, cancel, the
customer's reply; other services' events are in `timeline`), warranty and alert-storm windows.
No I/O: a decision returns the ticket's new state and its events; the store writes both at once."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from aftersales.intake import messages
from aftersales.intake.rules import Classification
from aftersales.shared.aggregate import Decision
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.requests import CustomerIn, ProductIn, TicketRequest
from aftersales.shared.errors import Conflict
from aftersales.shared.pii import redact_pii


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


# ---------------------------------------------------------------- the ticket aggregate


@dataclass(frozen=True, slots=True)
class Appended:
    """What a decision adds beside the ticket: timeline entries, the customer's messages and the ids of
    the downstream events it applies. None of them lives in the ticket's document (which FerretDB rewrites
    whole on every change) nor is loaded into the aggregate: the store writes them to their own
    collections (see `store.TicketStore.write`)."""

    timeline: tuple[dict[str, Any], ...] = ()
    customer_messages: tuple[dict[str, Any], ...] = ()
    applied_events: tuple[str, ...] = ()  # downstream events this change applies (each at most once)
    conversation: tuple[dict[str, Any], ...] = ()  # notes, staff messages, customer replies (numbered)

    def __bool__(self) -> bool:
        return bool(self.timeline or self.customer_messages or self.applied_events or self.conversation)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket: the system of record for one customer request (or one alert storm)."""

    id: str
    status: TicketStatus
    channel: Channel
    category: Category
    priority: Priority
    rules_version: str
    title: str
    description: str
    customer_id: str
    customer_tier: CustomerTier
    customer_timezone: str
    region_code: str
    product: Mapping[str, Any]  # the stored form, see `product_document`
    created_by: str  # "http:<token subject>" or "kafka:<ce_source>"
    source: str  # "http" or "kafka"
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    storm_key: str  # the storm it collects alerts for, else a unique released key
    version: int = 0
    matched_rules: tuple[str, ...] = ()
    category_hint: Category | None = None
    priority_hint: Priority | None = None
    external_ref: str | None = None
    under_warranty: bool | None = None
    # IoT alerts (a storm ticket): the fault, how many alerts it folded and when they were observed
    fault_code: str | None = None
    severity: int | None = None
    alert_count: int | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    request_offsets: Mapping[str, int] = field(default_factory=dict)  # highest offset per partition
    request_keys: tuple[str, ...] = ()
    request_hash: str | None = None
    # the lifecycle other services' events drive
    technician_id: str | None = None
    last_technician_id: str | None = None
    grid_id: str | None = None  # the service grid (网格) of its work order, from routing's events
    reopen_count: int = 0
    assignment_mark: tuple[int, datetime] | None = None  # (round, time) of the last assignment applied
    pending_followup: Mapping[str, Any] | None = None  # a follow-up outcome waiting for its resolution
    resolved_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    closed_at: datetime | None = None
    close_reason: str | None = None  # confirmed_resolved, closed_by_agent or merged
    close_note: str | None = None  # the agent's own words on closing by hand (redacted)
    merged_into: str | None = None  # a duplicate: the original it was merged into
    conversation_seq: int = 0  # entries on the ticket's conversation (notes, messages, replies)
    applied_events: frozenset[str] = frozenset()  # downstream events known to be applied (see `store`)
    # The latest time (µs since the epoch) of a downstream event applied: one later was never applied.
    # None on a ticket stored before it was kept (its events are always looked up).
    downstream_until: int | None = None
    appended: Appended = Appended()
    # Kept by the store, never decided on: how many timeline entries the ticket has had, and what its
    # last change appended that may not have reached its own collections yet.
    timeline_seq: int = 0
    last_appended: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TicketDecision(Decision[Ticket]):
    """A decision on a ticket. It changes the ticket when it causes events or adds to its lists (a
    downstream event that moves nothing still goes on the timeline, and must be written)."""

    moved_to: TicketStatus | None = None  # the status a change moved the ticket to, if it moved it

    @property
    def changed(self) -> bool:
        return bool(self.events) or bool(self.state.appended)


def new_ticket(
    request: TicketRequest,
    *,
    ticket_id: str,
    customer_id: str,
    decided: Classification,
    warranty: bool | None,
    caller: str,
    source: str,
    key: str | None,
    fingerprint: str,
    now: datetime,
) -> Ticket:
    """Return the ticket a (judged and classified) request opens."""
    customer, iot = request.customer, request.iot
    return Ticket(
        id=ticket_id,
        status=TicketStatus.NEW,
        channel=request.channel,
        category=decided.category,
        priority=decided.priority,
        rules_version=decided.rules_version,
        matched_rules=tuple(decided.matched),
        category_hint=request.category_hint,
        priority_hint=request.priority_hint,
        title=request.title,
        description=request.description,
        external_ref=request.external_ref,
        customer_id=customer_id,
        customer_tier=customer.tier,
        customer_timezone=customer.timezone,
        region_code=customer.region_code,
        product=product_document(request.product),
        under_warranty=warranty,
        fault_code=iot.fault_code if iot else None,
        severity=iot.severity if iot else None,
        alert_count=1 if iot else None,
        first_seen=stored_precision(iot.observed_at) if iot else None,
        last_seen=stored_precision(iot.observed_at) if iot else None,
        storm_key=released_storm_key(ticket_id),
        created_by=caller,
        source=source,
        created_at=now,
        updated_at=now,
        status_changed_at=now,
        request_keys=(key,) if key else (),
        request_hash=fingerprint,
        downstream_until=0,  # no downstream event applied yet
        appended=Appended(
            timeline=(
                {"at": now, "type": "ticket.created", "source": "intake", "channel": request.channel.value},
            )
        ),
    )


def can_cancel(current: TicketStatus) -> bool:
    return current not in DONE


def can_customer_reply(current: TicketStatus) -> bool:
    return current is TicketStatus.PENDING_CUSTOMER


def moved(
    ticket: Ticket, status: TicketStatus, now: datetime, entry: dict[str, Any], **changes: Any
) -> Ticket:
    """Return the ticket moved to `status` by intake itself, the move noted on its timeline."""
    return replace(
        ticket,
        status=status,
        status_changed_at=now,
        updated_at=now,
        appended=Appended(timeline=({"at": now, "source": "intake", **entry},)),
        **changes,
    )


def cancel(ticket: Ticket, *, reason: str, now: datetime) -> TicketDecision:
    """Cancel a ticket that is not resolved yet (it stops collecting storm alerts); 409 otherwise."""
    if not can_cancel(ticket.status):
        raise Conflict(
            f"ticket {ticket.id} is {ticket.status.value} and can no longer be cancelled", field="status"
        )
    after = moved(
        ticket,
        TicketStatus.CANCELLED,
        now,
        {"type": "ticket.cancelled"},
        storm_key=released_storm_key(ticket.id),
        cancelled_at=now,
        cancel_reason=reason,
    )
    return TicketDecision(after, (messages.cancelled(ticket.id, reason, now),))


def customer_replied(ticket: Ticket, *, message: str | None, now: datetime) -> TicketDecision:
    """Move a ticket waiting on the customer back to work, keeping the (redacted) message; 409 otherwise."""
    if not can_customer_reply(ticket.status):
        raise Conflict(
            f"ticket {ticket.id} is {ticket.status.value}, not waiting for the customer", field="status"
        )
    after = moved(ticket, TicketStatus.IN_PROGRESS, now, {"type": "ticket.customer_replied"})
    if message:
        said = {"at": now, "message": redact_pii(message)}
        after = replace(after, appended=replace(after.appended, customer_messages=(said,)))
        after = with_customer_words(after, redact_pii(message), now)
    return TicketDecision(after, (messages.customer_replied(ticket.id, now),))


def customer_wrote(ticket: Ticket, *, message: str, reply_id: str, now: datetime) -> TicketDecision:
    """Apply a reply the customer sent on the ticket's thread (a mail), once per `reply_id`: a ticket
    waiting on the customer goes back to work as `customer_replied`; any other keeps its status, the
    (redacted) message kept on it for staff, so nothing the customer wrote is lost or parked."""
    if reply_id in ticket.applied_events:
        return TicketDecision(ticket, ())
    if can_customer_reply(ticket.status):
        decision = customer_replied(ticket, message=message, now=now)
        after = replace(decision.state, appended=replace(decision.state.appended, applied_events=(reply_id,)))
        return TicketDecision(after, decision.events, moved_to=TicketStatus.IN_PROGRESS)
    said = ({"at": now, "message": redact_pii(message)},) if message else ()
    entry = {"at": now, "source": "intake", "type": "ticket.customer_wrote"}
    after = replace(
        ticket,
        updated_at=now,
        appended=Appended(timeline=(entry,), customer_messages=said, applied_events=(reply_id,)),
    )
    if message:
        after = with_customer_words(after, redact_pii(message), now)
    return TicketDecision(after, ())


# ---------------------------------------------------------------- the conversation

MAX_CONVERSATION = 500  # entries on one ticket's conversation; a full one takes no more notes or messages


def conversation_entry(
    ticket: Ticket, *, kind: str, text: str, author: str, role: str, now: datetime
) -> dict[str, Any]:
    """Return the ticket's next conversation entry (numbered after its last, the number in its id)."""
    seq = ticket.conversation_seq
    return {
        "seq": seq,
        "id": f"{ticket.id}-m{seq:04d}",
        "kind": kind,  # note (staff only), message (staff to the customer) or customer_reply
        "at": now,
        "author": author,
        "role": role,
        "text": text,
    }


def with_conversation(ticket: Ticket, entry: dict[str, Any]) -> Ticket:
    """Return the ticket with `entry` appended to its conversation (see `conversation_entry`)."""
    appended = replace(ticket.appended, conversation=(*ticket.appended.conversation, entry))
    return replace(ticket, appended=appended, conversation_seq=int(entry["seq"]) + 1)


def with_customer_words(ticket: Ticket, text: str, now: datetime) -> Ticket:
    """Return the ticket with the customer's reply on its conversation; a full conversation keeps the
    reply only beside its timeline entry (where it always was), never refusing what the customer said."""
    if ticket.conversation_seq >= MAX_CONVERSATION:
        return ticket
    entry = conversation_entry(
        ticket, kind="customer_reply", text=text, author="customer", role="customer", now=now
    )
    return with_conversation(ticket, entry)


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


# ---------------------------------------------------------------- ticket documents


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
