"""The ticket read model: assignment, follow-up and feedback events move a ticket's status and extend its
timeline, each event applied once (by ce_id, in the ticket document). An assignment event older (by
round, then time) than the last one applied goes on the timeline without moving the status back. A
follow-up's reopen request reopens the ticket; a follow-up that confirms the fix closes it. Both emit
intake events via the outbox."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aftersales.intake import domain, metrics
from aftersales.intake.domain import TicketStatus
from aftersales.intake.service import event_for
from aftersales.intake.store import KEEP_TIMELINE, Change, TicketStore
from aftersales.shared.contracts.events import TicketClosed, TicketReopened
from aftersales.shared.envelope import CloudEvent

log = logging.getLogger("aftersales.intake")


class ReadModel:
    def __init__(self, store: TicketStore) -> None:
        self.store = store

    async def apply(self, event: CloudEvent) -> None:
        """Apply one downstream event to its ticket (at most once)."""
        event.model()  # validates the data against the contract; a bad one is a PoisonEvent (-> DLQ)
        data = event.data
        ticket_id = data.get("ticket_id")
        if not isinstance(ticket_id, str) or not ticket_id:
            return  # grid-level events (surge on/off) and ticketless complaints are not on any ticket
        kind = domain.short_type(event.type)
        at = _occurred_at(data, event.time)
        entry = domain.timeline_entry(
            at=at, kind=kind, source=domain.source_service(event.source), data=data, event_id=event.id
        )
        outcome: dict[str, Any] = {}

        def decide(doc: dict[str, Any]) -> Change:
            outcome.clear()
            now = datetime.now(UTC)
            status = TicketStatus(doc["status"])
            sets: dict[str, Any] = {}
            events: list[CloudEvent] = []
            followup = domain.followup_action(kind, data)
            if kind.startswith("assignment.") and _is_stale(doc, data, at):
                pass  # older than what the status already shows (a redriven event): timeline only
            elif kind.startswith("assignment."):
                move = domain.assignment_transition(status, kind, data)
                if isinstance(data.get("round"), int):
                    sets["assignment_mark"] = [data["round"], at]
                if move.technician_id:
                    sets["technician_id"] = move.technician_id
                    sets["last_technician_id"] = move.technician_id
                if move.status is not None and move.status is not status:
                    sets.update(status=move.status.value, status_changed_at=now)
                    outcome["status"] = move.status
                    if move.status is TicketStatus.RESOLVED:
                        sets.update(resolved_at=at, storm_key=domain.released_storm_key(doc["_id"]))
                        # A follow-up outcome that overtook this resolution (another topic) applies now.
                        followup = doc.get("pending_followup")
                        status = TicketStatus.RESOLVED
                        sets["pending_followup"] = None
            if followup is not None:
                target = _follow_up(doc, status, followup, now, sets, events)
                if target is not None:
                    outcome["status"] = target
                elif domain.may_overtake(status):
                    sets["pending_followup"] = followup  # not resolved here yet: keep it for the resolution
            update: dict[str, Any] = {"$push": {"timeline": {"$each": [entry], "$slice": -KEEP_TIMELINE}}}
            if sets:
                update["$set"] = sets
            return Change(update=update, events=events)

        applied = await self.store.change(ticket_id, decide, event_id=event.id)
        if applied is None:
            log.warning("event for an unknown ticket ignored", extra={"ticket_id": ticket_id, "type": kind})
            return
        if applied.duplicate:
            return
        new_status = outcome.get("status")
        if new_status is not None:
            metrics.STATUS_CHANGES.labels(new_status.value).inc()
            if new_status is TicketStatus.REOPENED:
                metrics.TICKETS_REOPENED.inc()
            if new_status is TicketStatus.CLOSED:
                metrics.TICKETS_CLOSED.labels("confirmed_resolved").inc()


def _follow_up(
    doc: dict[str, Any],
    status: TicketStatus,
    action: dict[str, Any],
    now: datetime,
    sets: dict[str, Any],
    events: list[CloudEvent],
) -> TicketStatus | None:
    """Reopen or close a resolved ticket as a follow-up asked; return the new status, or None if not now."""
    if action["action"] == "reopen" and domain.can_reopen(status):
        count = int(doc.get("reopen_count", 0)) + 1
        sets.update(
            status=TicketStatus.REOPENED.value, status_changed_at=now, reopen_count=count, technician_id=None
        )
        reopened = TicketReopened(
            **domain.facts_of(doc),
            reason=action["reason"],
            reopen_count=count,
            previous_technician_id=sets.get("last_technician_id", doc.get("last_technician_id")),
            reopened_at=now,
        )
        events.append(event_for(reopened, doc["_id"]))
        return TicketStatus.REOPENED
    if action["action"] == "close" and domain.can_close_confirmed(status):
        sets.update(
            status=TicketStatus.CLOSED.value,
            status_changed_at=now,
            closed_at=now,
            close_reason=action["reason"],
        )
        events.append(
            event_for(
                TicketClosed(ticket_id=doc["_id"], reason="confirmed_resolved", closed_at=now), doc["_id"]
            )
        )
        return TicketStatus.CLOSED
    return None


def _is_stale(doc: dict[str, Any], data: dict[str, Any], at: datetime) -> bool:
    """True when an assignment event is older (by round, then time) than the last one that moved the
    status: a parked event redriven from the DLQ arrives after newer ones and must not move it back."""
    mark = doc.get("assignment_mark")
    if not mark or not isinstance(data.get("round"), int):
        return False
    last_round, last_at = mark
    return bool((data["round"], at) < (last_round, last_at))


def _occurred_at(data: dict[str, Any], fallback: datetime) -> datetime:
    text = data.get("occurred_at")
    if isinstance(text, str):
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    return fallback
