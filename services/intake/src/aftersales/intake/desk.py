"""The service desk's own decisions on a ticket (pure, no I/O): internal notes and messages to the customer
on its conversation; a supervisor's corrections (category, priority, product), merging a duplicate into
its original, closing and reopening by hand. Each returns the ticket's new state and its events."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from aftersales.intake import domain, messages
from aftersales.intake.domain import (
    MAX_CONVERSATION,
    REOPENABLE,
    TERMINAL,
    Appended,
    Ticket,
    TicketDecision,
    TicketStatus,
)
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.requests import ProductIn
from aftersales.shared.errors import Conflict, InvalidRequest
from aftersales.shared.pii import redact_pii

MERGED = "merged"
CLOSED_BY_AGENT = "closed_by_agent"
REASON_CHARS = 200  # of a staff reason kept on the timeline


@dataclass(frozen=True, slots=True)
class Author:
    """Who writes on a ticket: a token's subject and its role (supervisor covers admins)."""

    subject: str
    role: str  # supervisor or technician


# ---------------------------------------------------------------- the conversation


def noted(ticket: Ticket, *, text: str, by: Author, now: datetime) -> TicketDecision:
    """Add an internal note (staff only, never shown to the channel); no event."""
    return _written(ticket, kind="note", text=text, by=by, now=now, entry_type="ticket.note_added")


def message_posted(ticket: Ticket, *, text: str, by: Author, now: datetime) -> TicketDecision:
    """Add a staff message to the customer; `ticket.message-posted` carries its id, never its text."""
    decision = _written(ticket, kind="message", text=text, by=by, now=now, entry_type="ticket.message_posted")
    [entry] = decision.state.appended.conversation
    event = messages.message_posted(ticket.id, entry["id"], role=by.role, at=now)
    return TicketDecision(decision.state, (event,))


def _written(
    ticket: Ticket, *, kind: str, text: str, by: Author, now: datetime, entry_type: str
) -> TicketDecision:
    if ticket.conversation_seq >= MAX_CONVERSATION:
        raise InvalidRequest(
            f"ticket {ticket.id}'s conversation is full ({MAX_CONVERSATION} entries)", field="text"
        )
    entry = domain.conversation_entry(ticket, kind=kind, text=text, author=by.subject, role=by.role, now=now)
    noted_at = {
        "at": now,
        "type": entry_type,
        "source": "intake",
        "message_id": entry["id"],
        "by": by.subject,
    }
    after = replace(ticket, updated_at=now, appended=Appended(timeline=(noted_at,)))
    return TicketDecision(domain.with_conversation(after, entry))


def shown_to_channel(entry: dict[str, Any]) -> bool:
    """Whether a channel (the customer's side) sees a conversation entry: never an internal note."""
    return entry.get("kind") in {"message", "customer_reply"}


# ---------------------------------------------------------------- corrections


@dataclass(frozen=True, slots=True)
class Correction:
    """What a supervisor corrects on a ticket (None: unchanged) and why."""

    reason: str
    category: Category | None = None
    priority: Priority | None = None
    product: ProductIn | None = None


def corrected(ticket: Ticket, fix: Correction, *, by: str, today: date, now: datetime) -> TicketDecision:
    """Correct category, priority or product of an open ticket: `ticket.updated` `priority_changed`
    (routing re-plans its SLA clocks) and/or `details_changed`; nothing when nothing differs."""
    _must_be_open(ticket, "corrected")
    changes: dict[str, Any] = {}
    if fix.category is not None and fix.category is not ticket.category:
        changes["category"] = fix.category
    if fix.priority is not None and fix.priority is not ticket.priority:
        changes["priority"] = fix.priority
    if fix.product is not None:
        product = domain.product_document(fix.product)
        if product != dict(ticket.product):
            changes.update(product=product, under_warranty=domain.under_warranty(fix.product, today))
    if not changes:
        return TicketDecision(ticket)
    entry = {
        "at": now,
        "type": "ticket.corrected",
        "source": "intake",
        "by": by,
        "fields": sorted(k for k in changes if k != "under_warranty"),
        "reason": redact_pii(fix.reason)[:REASON_CHARS],
    }
    if "priority" in changes:
        entry["priority"] = changes["priority"].value
    if "category" in changes:
        entry["category"] = changes["category"].value
    after = replace(ticket, **changes, updated_at=now, appended=Appended(timeline=(entry,)))
    events: list[Any] = []
    if "priority" in changes:
        events.append(messages.priority_changed(after, now))
    if "category" in changes or "product" in changes:
        events.append(messages.details_changed(after, now))
    return TicketDecision(after, tuple(events))


# ---------------------------------------------------------------- merge, close and reopen by hand


def merged_into(
    duplicate: Ticket, original: Ticket, *, by: str, reason: str, now: datetime
) -> TicketDecision:
    """Close a duplicate as `merged` pointing at its original; `ticket.cancelled` ends its open work
    (routing frees the technician's slot, follow-ups are cancelled), then `ticket.duplicate-merged`.
    Merging again into the same original changes nothing."""
    if duplicate.merged_into == original.id:
        return TicketDecision(duplicate)
    if duplicate.id == original.id:
        raise InvalidRequest("a ticket cannot be merged into itself", field="original_ticket_id")
    if duplicate.customer_id != original.customer_id:
        raise InvalidRequest(
            f"ticket {original.id} is another customer's; only a customer's own duplicate can be merged",
            field="original_ticket_id",
        )
    if original.status is TicketStatus.CANCELLED or original.merged_into:
        raise Conflict(
            f"ticket {original.id} is {original.status.value}; merge into the ticket that carries the work",
            field="original_ticket_id",
        )
    _must_be_open(duplicate, "merged")
    note = redact_pii(reason)
    entry = {"type": "ticket.merged_into", "original_ticket_id": original.id, "by": by}
    after = domain.moved(
        duplicate,
        TicketStatus.CLOSED,
        now,
        {**entry, "reason": note[:REASON_CHARS]},
        closed_at=now,
        close_reason=MERGED,
        close_note=note,
        merged_into=original.id,
        technician_id=None,
        pending_followup=None,
        storm_key=domain.released_storm_key(duplicate.id),
    )
    events = (
        messages.cancelled(duplicate.id, f"merged into {original.id}", now),
        messages.duplicate_merged(duplicate.id, original.id, by=by, at=now),
    )
    return TicketDecision(after, events, moved_to=TicketStatus.CLOSED)


def duplicate_noted(original: Ticket, *, duplicate_id: str, now: datetime) -> TicketDecision:
    """Note a merged duplicate on its original's timeline, once per duplicate."""
    marker = f"merge:{duplicate_id}"
    if marker in original.applied_events:
        return TicketDecision(original)
    entry = {
        "at": now,
        "type": "ticket.duplicate_merged",
        "source": "intake",
        "duplicate_ticket_id": duplicate_id,
    }
    after = replace(original, updated_at=now, appended=Appended(timeline=(entry,), applied_events=(marker,)))
    return TicketDecision(after)


def closed_by_agent(ticket: Ticket, *, by: str, reason: str, now: datetime) -> TicketDecision:
    """Close a ticket by hand (`ticket.closed` `closed_by_agent`: routing ends its work order)."""
    _must_be_open(ticket, "closed")
    note = redact_pii(reason)
    after = domain.moved(
        ticket,
        TicketStatus.CLOSED,
        now,
        {"type": "ticket.closed", "reason": CLOSED_BY_AGENT, "by": by, "note": note[:REASON_CHARS]},
        closed_at=now,
        close_reason=CLOSED_BY_AGENT,
        close_note=note,
        technician_id=None,
        pending_followup=None,
        storm_key=domain.released_storm_key(ticket.id),
    )
    return TicketDecision(after, (messages.closed_by_agent(ticket.id, now),), moved_to=TicketStatus.CLOSED)


def reopened_by_agent(ticket: Ticket, *, by: str, reason: str, now: datetime) -> TicketDecision:
    """Reopen a resolved or closed ticket by hand (`ticket.reopened`: routing dispatches a new round,
    preferring the previous technician). A merged duplicate is not reopened: its original carries the work."""
    if ticket.merged_into:
        raise Conflict(
            f"ticket {ticket.id} was merged into {ticket.merged_into}; reopen that one", field="status"
        )
    if ticket.status not in REOPENABLE:
        raise Conflict(
            f"ticket {ticket.id} is {ticket.status.value}; only a resolved or closed ticket can be reopened",
            field="status",
        )
    note = redact_pii(reason)
    after = domain.moved(
        ticket,
        TicketStatus.REOPENED,
        now,
        {"type": "ticket.reopened", "by": by, "reason": note[:REASON_CHARS]},
        reopen_count=ticket.reopen_count + 1,
        technician_id=None,
        closed_at=None,
        close_reason=None,
        close_note=None,
    )
    event = messages.reopened(after, reason=note, previous_technician_id=ticket.last_technician_id, at=now)
    return TicketDecision(after, (event,), moved_to=TicketStatus.REOPENED)


def _must_be_open(ticket: Ticket, what: str) -> None:
    if ticket.status in TERMINAL:
        raise Conflict(
            f"ticket {ticket.id} is {ticket.status.value} and can no longer be {what}", field="status"
        )
