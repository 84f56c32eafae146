"""Intake's outgoing contract events (`aftersales.tickets.v1`), built from the ticket they are about.
Pure functions; `envelope` wraps one in its CloudEvent (written to the ticket's outbox by the store)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketMerged,
    TicketReopened,
    TicketUpdated,
)
from aftersales.shared.contracts.tickets_desk import TicketDuplicateMerged, TicketMessagePosted
from aftersales.shared.envelope import CloudEvent, new_event

if TYPE_CHECKING:  # the domain builds its events here; only the type is needed back
    from aftersales.intake.domain import Ticket

SOURCE = "/aftersales/intake"


def envelope(model: BaseModel, ticket_id: str) -> CloudEvent:
    """Return the CloudEvent of one of a ticket's events (the ticket id is its subject and key)."""
    return new_event(model, source=SOURCE, subject=ticket_id)


def facts_of(ticket: Ticket) -> dict[str, Any]:
    """Return the TicketFacts fields of a ticket (what routing, follow-up and metrics need)."""
    product = ticket.product or {}
    return {
        "ticket_id": ticket.id,
        "channel": ticket.channel,
        "category": ticket.category,
        "priority": ticket.priority,
        "customer_id": ticket.customer_id,
        "customer_tier": ticket.customer_tier,
        "customer_timezone": ticket.customer_timezone,
        "region_code": ticket.region_code,
        "device_type": product.get("device_type", "unknown"),
        "product_model": product.get("model"),
        "under_warranty": ticket.under_warranty,
        "fault_code": ticket.fault_code,
        "submitted_by": ticket.created_by,
    }


def created(ticket: Ticket) -> TicketCreated:
    return TicketCreated(**facts_of(ticket), created_at=ticket.created_at, rules_version=ticket.rules_version)


def cancelled(ticket_id: str, reason: str, at: datetime) -> TicketCancelled:
    return TicketCancelled(ticket_id=ticket_id, reason=reason, cancelled_at=at)


def customer_replied(ticket_id: str, at: datetime) -> TicketUpdated:
    return TicketUpdated(ticket_id=ticket_id, change="customer_replied", updated_at=at)


def reopened(
    ticket: Ticket, *, reason: str, previous_technician_id: str | None, at: datetime
) -> TicketReopened:
    """`ticket` is the reopened ticket (its `reopen_count` already counts this reopening)."""
    return TicketReopened(
        **facts_of(ticket),
        reason=reason,
        reopen_count=ticket.reopen_count,
        previous_technician_id=previous_technician_id,
        reopened_at=at,
    )


def closed_confirmed(ticket_id: str, at: datetime) -> TicketClosed:
    return TicketClosed(ticket_id=ticket_id, reason="confirmed_resolved", closed_at=at)


def merged(ticket: Ticket) -> TicketMerged:
    """`ticket` is the storm ticket after the fold."""
    assert ticket.alert_count is not None and ticket.first_seen and ticket.last_seen
    return TicketMerged(
        ticket_id=ticket.id,
        fault_code=str(ticket.fault_code),
        alert_count=ticket.alert_count,
        first_seen=ticket.first_seen,
        last_seen=ticket.last_seen,
    )


def priority_changed(ticket: Ticket, at: datetime) -> TicketUpdated:
    return TicketUpdated(
        ticket_id=ticket.id, change="priority_changed", priority=ticket.priority, updated_at=at
    )


def details_changed(ticket: Ticket, at: datetime) -> TicketUpdated:
    """A supervisor corrected the category or the product (`ticket` after the correction)."""
    product = ticket.product or {}
    return TicketUpdated(
        ticket_id=ticket.id,
        change="details_changed",
        category=ticket.category,
        device_type=product.get("device_type"),
        product_model=product.get("model"),
        updated_at=at,
    )


def closed_by_agent(ticket_id: str, at: datetime) -> TicketClosed:
    return TicketClosed(ticket_id=ticket_id, reason="closed_by_agent", closed_at=at)


def message_posted(ticket_id: str, message_id: str, *, role: str, at: datetime) -> TicketMessagePosted:
    return TicketMessagePosted.model_validate(
        {"ticket_id": ticket_id, "message_id": message_id, "author_role": role, "posted_at": at}
    )


def duplicate_merged(ticket_id: str, original_id: str, *, by: str, at: datetime) -> TicketDuplicateMerged:
    return TicketDuplicateMerged(
        ticket_id=ticket_id, original_ticket_id=original_id, merged_by=by, merged_at=at
    )
