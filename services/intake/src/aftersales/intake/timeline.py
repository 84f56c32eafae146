"""What other services' events do to a ticket: each goes on its timeline (at most once, by event id);
routing's assignment events drive its status and technician unless older than the last one applied
(a work order handed back to the queue takes the technician off the ticket); a follow-up reopens or
closes it. Pure functions, no I/O; `apply_downstream` is the decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.intake import messages
from aftersales.intake.domain import (
    REOPENABLE,
    TERMINAL,
    Appended,
    Ticket,
    TicketDecision,
    TicketStatus,
    released_storm_key,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    """What one downstream event does to a ticket: its new status (None = unchanged) and technician."""

    status: TicketStatus | None = None
    technician_id: str | None = None
    unassigned: bool = False  # the work order went back to the queue: nobody works on the ticket now


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


# A work order queued while its ticket is in one of these was handed back (or escalated to the queue).
HANDED_BACK_FROM = frozenset(
    {TicketStatus.ASSIGNED, TicketStatus.IN_PROGRESS, TicketStatus.PENDING_CUSTOMER, TicketStatus.ESCALATED}
)


def assignment_transition(
    current: TicketStatus, kind: str, data: Mapping[str, Any], *, reopened: bool = False
) -> Transition:
    """Return what an assignment event does to a ticket in status `current` (`reopened`: the ticket
    was reopened before, so waiting for a technician again is `reopened`, not `new`).

    A closed or cancelled ticket keeps its status (its events still go on the timeline). A work order
    queued while a technician had it (a hand-back) puts the ticket back to waiting, with no technician;
    queued at first dispatch, it leaves the ticket as it is.
    """
    if kind == "assignment.queued":
        if current not in HANDED_BACK_FROM:
            return Transition()
        return Transition(status=TicketStatus.REOPENED if reopened else TicketStatus.NEW, unassigned=True)
    target = _ASSIGNMENT_STATUS.get(kind)
    technician = data.get("technician_id") or data.get("to_technician_id")
    if target is None or current in TERMINAL:
        return Transition(technician_id=None)
    return Transition(status=target, technician_id=technician if isinstance(technician, str) else None)


def can_reopen(current: TicketStatus) -> bool:
    return current in REOPENABLE


def can_close_confirmed(current: TicketStatus) -> bool:
    return current is TicketStatus.RESOLVED


def followup_action(kind: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
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
    *, at: datetime, kind: str, source: str, data: Mapping[str, Any], event_id: str
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


@dataclass(frozen=True, slots=True)
class Downstream:
    """Another service's event about a ticket (an assignment, follow-up or feedback event)."""

    event_id: str
    kind: str  # the short type, e.g. `assignment.resolved`
    data: Mapping[str, Any]
    at: datetime  # when it happened (its `occurred_at`, else the event's time)
    entry: dict[str, Any]  # its timeline entry
    # Another service's event: its own time in µs since the epoch (the same on every delivery of it).
    stamp: int | None = None


def downstream_of(
    *, ce_type: str, ce_source: str, ce_id: str, ce_time: datetime, data: Mapping[str, Any]
) -> Downstream:
    """Return a downstream event as the ticket's timeline sees it."""
    kind = short_type(ce_type)
    at = _occurred_at(data, ce_time)
    entry = timeline_entry(at=at, kind=kind, source=source_service(ce_source), data=data, event_id=ce_id)
    stamp = (ce_time.replace(tzinfo=ce_time.tzinfo or UTC) - EPOCH) // timedelta(microseconds=1)
    return Downstream(event_id=ce_id, kind=kind, data=data, at=at, entry=entry, stamp=stamp)


def apply_downstream(ticket: Ticket, event: Downstream, *, now: datetime) -> TicketDecision:
    """Return what another service's event does to a ticket, at most once per event id.

    Every event goes on the timeline. An assignment event moves the status and the technician unless it
    is older (by round, then time) than the last one applied. A follow-up's reopen request reopens the
    ticket; a follow-up that confirms the fix closes it; one that overtook the resolution it refers to
    waits on the ticket and applies with that resolution."""
    if event.event_id in ticket.applied_events:
        return TicketDecision(ticket)  # a redelivery: nothing to write
    after = ticket
    followup: Mapping[str, Any] | None = followup_action(event.kind, event.data)
    if event.kind.startswith("assignment.") and not is_stale(ticket, event):
        after = _assigned(ticket, event, now)
        if after.status is TicketStatus.RESOLVED and ticket.status is not TicketStatus.RESOLVED:
            followup = ticket.pending_followup  # a follow-up outcome that overtook this resolution
    events: tuple[Any, ...] = ()
    if followup is not None:
        after, events = _follow_up(after, followup, now)
    until = ticket.downstream_until
    after = replace(
        after,
        updated_at=now,
        appended=Appended(timeline=(event.entry,), applied_events=(event.event_id,)),
        downstream_until=until if until is None or event.stamp is None else max(until, event.stamp),
    )
    moved_to = after.status if after.status is not ticket.status else None
    return TicketDecision(after, events, moved_to=moved_to)


def _assigned(ticket: Ticket, event: Downstream, now: datetime) -> Ticket:
    """Return the ticket after an assignment event (not older than the last one applied)."""
    move = assignment_transition(ticket.status, event.kind, event.data, reopened=ticket.reopen_count > 0)
    changes: dict[str, Any] = {}
    round_ = event.data.get("round")
    if isinstance(round_, int):
        changes["assignment_mark"] = (round_, event.at)
    grid = event.data.get("grid_id")
    if isinstance(grid, str) and grid:
        changes["grid_id"] = grid
    if move.technician_id:
        changes.update(technician_id=move.technician_id, last_technician_id=move.technician_id)
    if move.unassigned:
        changes["technician_id"] = None  # `last_technician_id` keeps who had it last
    if move.status is not None and move.status is not ticket.status:
        changes.update(status=move.status, status_changed_at=now)
        if move.status is TicketStatus.RESOLVED:
            changes.update(
                resolved_at=event.at, storm_key=released_storm_key(ticket.id), pending_followup=None
            )
    return replace(ticket, **changes)


def _follow_up(ticket: Ticket, action: Mapping[str, Any], now: datetime) -> tuple[Ticket, tuple[Any, ...]]:
    """Reopen or close a resolved ticket as a follow-up asked; else keep the outcome for the resolution
    it may have overtaken (or drop it when the ticket is past that)."""
    if action["action"] == "reopen" and can_reopen(ticket.status):
        reopened = replace(
            ticket,
            status=TicketStatus.REOPENED,
            status_changed_at=now,
            reopen_count=ticket.reopen_count + 1,
            technician_id=None,
        )
        event = messages.reopened(
            reopened, reason=action["reason"], previous_technician_id=ticket.last_technician_id, at=now
        )
        return reopened, (event,)
    if action["action"] == "close" and can_close_confirmed(ticket.status):
        closed = replace(
            ticket,
            status=TicketStatus.CLOSED,
            status_changed_at=now,
            closed_at=now,
            close_reason=action["reason"],
        )
        return closed, (messages.closed_confirmed(ticket.id, now),)
    if may_overtake(ticket.status):
        return replace(ticket, pending_followup=action), ()
    return ticket, ()


def is_stale(ticket: Ticket, event: Downstream) -> bool:
    """True when an assignment event is older (by round, then time) than the last one that moved the
    status: a parked event redriven from the DLQ arrives after newer ones and must not move it back."""
    mark = ticket.assignment_mark
    round_ = event.data.get("round")
    if not mark or not isinstance(round_, int):
        return False
    last_round, last_at = mark
    return bool((round_, event.at) < (last_round, last_at))


def _occurred_at(data: Mapping[str, Any], fallback: datetime) -> datetime:
    text = data.get("occurred_at")
    if isinstance(text, str):
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    return fallback
