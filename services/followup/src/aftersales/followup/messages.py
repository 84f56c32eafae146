"""The events a follow-up visit's changes publish on `aftersales.followups.v1` (pure: models, no I/O)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from aftersales.followup.domain import Decision, Effect, Visit
from aftersales.shared.contracts.events import (
    ReopenRequested,
    VisitCancelled,
    VisitCompleted,
    VisitDue,
    VisitMissed,
    VisitOutcome,
    VisitScheduled,
)


def scheduled(visit: Visit, now: datetime, *, rescheduled: bool = False) -> VisitScheduled:
    return VisitScheduled(
        visit_id=visit.id,
        ticket_id=visit.ticket_id,
        kind=visit.kind,
        occurred_at=now,
        due_at=visit.due_at,
        grid_id=visit.grid_id,
        round=visit.round,
        attempt=visit.attempt,
        deadline_at=visit.deadline_at,
        technician_id=visit.technician_id,
        rescheduled=rescheduled,
    )


def due(visit: Visit, now: datetime) -> VisitDue:
    return VisitDue(
        visit_id=visit.id,
        ticket_id=visit.ticket_id,
        kind=visit.kind,
        occurred_at=now,
        due_at=visit.due_at,
        grid_id=visit.grid_id,
        round=visit.round,
        attempt=visit.attempt,
    )


def missed(visit: Visit, now: datetime, *, unreachable: bool = False) -> VisitMissed:
    return VisitMissed(
        visit_id=visit.id,
        ticket_id=visit.ticket_id,
        kind=visit.kind,
        occurred_at=now,
        due_at=visit.due_at,
        reason="unreachable" if unreachable else "overdue",
        round=visit.round,
        attempt=visit.attempt,
    )


def cancelled(visit: Visit, now: datetime, reason: str) -> VisitCancelled:
    return VisitCancelled(
        visit_id=visit.id, ticket_id=visit.ticket_id, kind=visit.kind, occurred_at=now, reason=reason
    )


def for_decision(before: Visit, decision: Decision, now: datetime, note: str | None) -> list[BaseModel]:
    """Return the events of an agent's outcome, in the order subscribers should see them."""
    after = decision.visit
    out: list[BaseModel] = []
    for effect in decision.effects:
        if effect == Effect.COMPLETED:
            assert after.outcome is not None
            out.append(
                VisitCompleted(
                    visit_id=after.id,
                    ticket_id=after.ticket_id,
                    kind=after.kind,
                    occurred_at=now,
                    outcome=after.outcome,
                    attempt=before.attempt,
                    technician_id=after.technician_id,
                    round=after.round,
                )
            )
        elif effect == Effect.REOPEN_REQUESTED:
            out.append(
                ReopenRequested(
                    visit_id=after.id,
                    ticket_id=after.ticket_id,
                    kind=after.kind,
                    occurred_at=now,
                    reason=_reopen_reason(note),
                    round=after.round,
                    technician_id=after.technician_id,
                )
            )
        elif effect == Effect.RESCHEDULED:
            out.append(scheduled(after, now, rescheduled=True))
        elif effect == Effect.MISSED:
            out.append(missed(after, now, unreachable=after.outcome == VisitOutcome.UNREACHABLE))
    return out


def _reopen_reason(note: str | None) -> str:
    # The agent's free-text note may hold personal data; the event carries a fixed reason only.
    return "customer reported the problem is not resolved at follow-up" + (
        " (agent note on file)" if note else ""
    )
