"""What a caller is shown of tickets and how it asks for lists: a channel's reduced view of a ticket,
list filters and opaque list cursors. Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aftersales.intake.domain import TicketStatus
from aftersales.shared.contracts.common import Category, Channel
from aftersales.shared.errors import InvalidRequest

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """Which tickets a list asks for (every given field must match; `created_to` is exclusive)."""

    status: TicketStatus | None = None
    customer_id: str | None = None
    channel: Channel | None = None
    category: Category | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    created_by: str | None = None
    technician_id: str | None = None


# ---------------------------------------------------------------- version guards


def expected_version(if_match: str | None, in_body: int | None) -> int | None:
    """Return the version a caller expects an object at: `If-Match` (`"3"`, `W/"3"` or `3`), else the
    body's `expected_version`; 422 naming `If-Match` when it is no version or the two disagree."""
    if if_match is None:
        return in_body
    text = if_match.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidRequest('If-Match must be a version, e.g. "3"', field="If-Match")
    if in_body is not None and int(text) != in_body:
        raise InvalidRequest("If-Match and expected_version disagree", field="If-Match")
    return int(text)


# ---------------------------------------------------------------- list cursors


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


# ---------------------------------------------------------------- what a channel may see of a ticket

# The timeline entries a channel (the customer's side) is shown, with time, type and source only:
# no technician ids, escalation levels, SLA clocks, grid ids or staff's free-text reasons.
CHANNEL_TIMELINE_TYPES = frozenset(
    {
        "ticket.created",
        "ticket.merged",
        "ticket.cancelled",
        "ticket.customer_replied",
        "ticket.message_posted",
        "ticket.closed",
        "ticket.reopened",
        "ticket.merged_into",
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
CHANNEL_HIDDEN_FIELDS = ("technician_id", "last_technician_id", "grid_id", "matched_rules")


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
