"""Per-ticket facts: what the metrics service knows about one ticket, folded from every stream.

The fold is order-independent: timestamps keep their minimum or maximum, flags only turn on, child
records (surveys, complaints, visits) are keyed by their own id and merge field by field, and the
"latest" value of something (assignee, priority) is chosen by its own timestamp. Applying the same
events in any order gives the same facts; durations are derived only when both ends are known.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintEvent,
    ComplaintOpened,
    ComplaintUpdated,
    SlaBreached,
    SurveySubmitted,
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketFacts,
    TicketMerged,
    TicketReopened,
    TicketUpdated,
    VisitCancelled,
    VisitCompleted,
    VisitEvent,
    VisitMissed,
    VisitScheduled,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderPending,
    WorkOrderReassigned,
    WorkOrderResolved,
    WorkOrderStarted,
)

COMPLAINT_SUBJECT_PREFIX = "complaint:"

T = TypeVar("T")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Survey(_Model):
    survey_id: str
    round: int = 1
    csat: int
    nps: int | None = None
    technician_id: str | None = None
    submitted_at: datetime


class Complaint(_Model):
    complaint_id: str
    opened_at: datetime | None = None
    deadline_at: datetime | None = None
    deadline_set_at: datetime | None = None
    closed_at: datetime | None = None
    within_deadline: bool | None = None
    category: str | None = None
    scope: str | None = None
    escalated: bool = False


class Visit(_Model):
    visit_id: str
    kind: str
    scheduled_at: datetime | None = None
    due_at: datetime | None = None
    due_key: tuple[int, datetime] | None = None
    completed_at: datetime | None = None
    outcome: str | None = None
    outcome_attempt: int = 0
    missed_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.completed_at is not None or self.cancelled_at is not None


class Facts(_Model):
    """Everything known about one ticket (or, for a complaint without a ticket, about that complaint)."""

    subject: str
    channel: str | None = None
    category: str | None = None
    priority: str | None = None
    priority_at: datetime | None = None
    product: str | None = None
    customer_tier: str | None = None
    facts_at: datetime | None = None
    created_at: datetime | None = None
    grid: str | None = None
    team: str | None = None
    technician: str | None = None
    grid_at: datetime | None = None
    technician_at: datetime | None = None
    team_at: datetime | None = None
    first_assigned_at: datetime | None = None
    first_response_at: datetime | None = None
    first_resolved_at: datetime | None = None
    resolved_rounds: dict[str, datetime] = {}
    reopen_count: int = 0
    last_reopened_at: datetime | None = None
    escalated: bool = False
    pauses: list[datetime] = []
    resumes: list[datetime] = []
    breached_clocks: list[str] = []
    closed_at: datetime | None = None
    cancelled_at: datetime | None = None
    merged_alerts: int = 0
    surveys: list[Survey] = []
    complaints: list[Complaint] = []
    visits: list[Visit] = []

    @property
    def is_ticket(self) -> bool:
        return not self.subject.startswith(COMPLAINT_SUBJECT_PREFIX)

    @property
    def resolved_now(self) -> bool:
        """True when the latest round (1 + reopens) has a resolution."""
        current_round = 1 + self.reopen_count
        return any(int(r) >= current_round for r in self.resolved_rounds)

    @property
    def is_open(self) -> bool:
        """An open ticket is in the backlog: created, not currently resolved, not closed or cancelled."""
        if self.created_at is None or self.cancelled_at is not None:
            return False
        if self.closed_at is not None and (
            self.last_reopened_at is None or self.closed_at >= self.last_reopened_at
        ):
            return False
        return not self.resolved_now

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _add_unique(items: list[T], item: T) -> list[T]:
    return sorted({*items, item}, key=str)  # a set, stored in a stable order


def _newer(at: datetime, than: datetime | None) -> bool:
    return than is None or at > than


def _apply_ticket_facts(f: Facts, data: TicketFacts, at: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if f.facts_at is None or at < f.facts_at:  # the earliest description of the ticket wins
        out.update(channel=data.channel.value, category=data.category.value, facts_at=at)
        out.update(product=data.product_model or data.device_type, customer_tier=data.customer_tier.value)
    if f.priority is None or _newer(at, f.priority_at):
        out.update(priority=data.priority.value, priority_at=at)
    return out


def _assignee(
    f: Facts, at: datetime, technician: str | None, grid: str, team: str | None = None
) -> dict[str, Any]:
    """Return grid, technician and team, each taken from the newest event that names it."""
    out: dict[str, Any] = {}
    for name, value in (("grid", grid), ("technician", technician), ("team", team)):
        seen: datetime | None = getattr(f, f"{name}_at")
        if value is not None and (
            seen is None or at > seen or (at == seen and value > (getattr(f, name) or ""))
        ):
            out.update({name: value, f"{name}_at": at})
    return out


def _upsert(items: list[Any], key: str, ident: str, factory: Any) -> tuple[list[Any], Any]:
    for i, item in enumerate(items):
        if getattr(item, key) == ident:
            return items[:i] + items[i + 1 :], item
    return items, factory()


def _merge_complaint(f: Facts, data: ComplaintEvent) -> dict[str, Any]:
    rest, c = _upsert(
        f.complaints, "complaint_id", data.complaint_id, lambda: Complaint(complaint_id=data.complaint_id)
    )
    upd: dict[str, Any] = {}
    at = data.occurred_at
    if isinstance(data, ComplaintOpened):
        upd.update(
            opened_at=_min(c.opened_at, at), category=c.category or (data.category and data.category.value)
        )
        upd["scope"] = data.scope.value
        if c.deadline_set_at is None or at >= c.deadline_set_at:
            upd.update(deadline_at=data.deadline_at, deadline_set_at=at)
    elif isinstance(data, ComplaintUpdated):
        if data.deadline_at is not None and (c.deadline_set_at is None or at > c.deadline_set_at):
            upd.update(deadline_at=data.deadline_at, deadline_set_at=at)
        upd["escalated"] = c.escalated or data.escalated
    elif isinstance(data, ComplaintClosed):
        upd.update(closed_at=_min(c.closed_at, at), within_deadline=data.within_deadline)
    merged = c.model_copy(update=upd)
    return {"complaints": sorted([*rest, merged], key=lambda x: x.complaint_id)}


def _merge_visit(f: Facts, data: VisitEvent) -> dict[str, Any]:
    rest, v = _upsert(
        f.visits, "visit_id", data.visit_id, lambda: Visit(visit_id=data.visit_id, kind=data.kind.value)
    )
    upd: dict[str, Any] = {}
    at = data.occurred_at
    if isinstance(data, VisitScheduled):
        upd["scheduled_at"] = _min(v.scheduled_at, at)
        key = (data.attempt, at)  # a rescheduled attempt moves the due time; the latest attempt wins
        if v.due_key is None or key > (v.due_key[0], v.due_key[1]):
            upd.update(due_at=data.due_at, due_key=(data.attempt, at))
    elif isinstance(data, VisitCompleted):
        upd["completed_at"] = _max(v.completed_at, at)
        if data.attempt >= v.outcome_attempt:
            upd.update(outcome=data.outcome.value, outcome_attempt=data.attempt)
    elif isinstance(data, VisitMissed):
        upd["missed_at"] = _min(v.missed_at, at)
        if v.due_at is None:
            upd["due_at"] = data.due_at
    elif isinstance(data, VisitCancelled):
        upd["cancelled_at"] = _min(v.cancelled_at, at)
    merged = v.model_copy(update=upd)
    return {"visits": sorted([*rest, merged], key=lambda x: x.visit_id)}


def fold(f: Facts, data: BaseModel) -> Facts:
    """Return the facts after one more event; the result does not depend on the order of events."""
    upd: dict[str, Any] = {}
    if isinstance(data, TicketCreated):
        upd.update(
            _apply_ticket_facts(f, data, data.created_at), created_at=_min(f.created_at, data.created_at)
        )
    elif isinstance(data, TicketReopened):
        upd.update(_apply_ticket_facts(f, data, data.reopened_at))
        upd["reopen_count"] = max(f.reopen_count, data.reopen_count)
        upd["last_reopened_at"] = _max(f.last_reopened_at, data.reopened_at)
    elif isinstance(data, TicketUpdated):
        if data.change == "customer_replied":
            upd["resumes"] = _add_unique(f.resumes, data.updated_at)
        if data.priority is not None and _newer(data.updated_at, f.priority_at):
            upd.update(priority=data.priority.value, priority_at=data.updated_at)
    elif isinstance(data, TicketMerged):
        upd["merged_alerts"] = max(f.merged_alerts, data.alert_count - 1)
    elif isinstance(data, TicketClosed):
        upd["closed_at"] = _max(f.closed_at, data.closed_at)
    elif isinstance(data, TicketCancelled):
        upd["cancelled_at"] = _min(f.cancelled_at, data.cancelled_at)
    elif isinstance(data, WorkOrderAssigned):
        upd.update(_assignee(f, data.occurred_at, data.technician_id, data.grid_id, data.team_id))
        upd["first_assigned_at"] = _min(f.first_assigned_at, data.occurred_at)
    elif isinstance(data, WorkOrderReassigned):
        upd.update(_assignee(f, data.occurred_at, data.to_technician_id, data.grid_id))
    elif isinstance(data, WorkOrderAccepted):
        upd.update(_assignee(f, data.occurred_at, data.technician_id, data.grid_id))
        upd["first_response_at"] = _min(f.first_response_at, data.occurred_at)
    elif isinstance(data, WorkOrderStarted):
        upd["resumes"] = _add_unique(f.resumes, data.occurred_at)
    elif isinstance(data, WorkOrderPending):
        upd["pauses"] = _add_unique(f.pauses, data.occurred_at)
    elif isinstance(data, WorkOrderEscalated):
        upd.update(_assignee(f, data.occurred_at, data.to_technician_id, data.grid_id), escalated=True)
    elif isinstance(data, WorkOrderResolved):
        upd.update(_assignee(f, data.occurred_at, data.technician_id, data.grid_id))
        rounds = dict(f.resolved_rounds)
        key = str(data.round)
        rounds[key] = min(rounds[key], data.occurred_at) if key in rounds else data.occurred_at
        upd.update(resolved_rounds=rounds, first_resolved_at=_min(f.first_resolved_at, data.occurred_at))
        upd["escalated"] = f.escalated or data.escalated
    elif isinstance(data, SlaBreached):
        upd["breached_clocks"] = _add_unique(f.breached_clocks, data.clock.value)
    elif isinstance(data, SurveySubmitted):
        if all(s.survey_id != data.survey_id for s in f.surveys):
            survey = Survey(
                survey_id=data.survey_id,
                round=data.round,
                csat=data.csat,
                nps=data.nps,
                technician_id=data.technician_id,
                submitted_at=data.occurred_at,
            )
            upd["surveys"] = sorted([*f.surveys, survey], key=lambda s: s.survey_id)
    elif isinstance(data, ComplaintEvent):
        upd.update(_merge_complaint(f, data))
    elif isinstance(data, VisitEvent):
        upd.update(_merge_visit(f, data))
    if not upd:
        return f
    return f.model_copy(update=upd)


def paused_seconds(f: Facts, until: datetime) -> float:
    """Return the time the ticket spent waiting on the customer between creation and `until`.

    A pause starts at a `pending` event and ends at the next resume (work started, customer replied);
    an unmatched pause runs until `until`. Overlaps count once.
    """
    if f.created_at is None:
        return 0.0
    marks = sorted([(t, 1) for t in f.pauses] + [(t, 0) for t in f.resumes])
    total = 0.0
    paused_since: datetime | None = None
    for at, is_pause in marks:
        at = min(max(at, f.created_at), until)
        if is_pause and paused_since is None:
            paused_since = at
        elif not is_pause and paused_since is not None:
            total += (at - paused_since).total_seconds()
            paused_since = None
    if paused_since is not None:
        total += (until - paused_since).total_seconds()
    return max(total, 0.0)


def subject_of(data: BaseModel) -> str:
    """Return the facts document of an event: its ticket, else its complaint, else "" (none)."""
    ticket_id = getattr(data, "ticket_id", None)
    if ticket_id:
        return str(ticket_id)
    if isinstance(data, ComplaintEvent):
        return f"{COMPLAINT_SUBJECT_PREFIX}{data.complaint_id}"
    return ""  # grid-level events (surge on/off) describe no ticket
