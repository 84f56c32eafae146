"""The fold: what one more event changes in a ticket's facts.

The fold is order-independent: timestamps keep their minimum or maximum, flags only turn on, child
records (surveys, complaints, visits) are keyed by their own id and merge field by field, and the
"latest" value of something (assignee, priority) is chosen by its own timestamp. Applying the same
events in any order gives the same facts; durations are derived only when both ends are known.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from aftersales.metrics.facts import Complaint, Facts, FieldVisit, PartUse, StockAlert, Survey, Visit
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
from aftersales.shared.contracts.fieldwork import (
    AppointmentEvent,
    AppointmentNoShow,
    StockConsumed,
    StockLow,
    StockReceived,
    VisitCheckedIn,
    VisitCheckedOut,
)

T = TypeVar("T")


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


def _earlier(at: datetime, than: datetime | None) -> bool:
    return than is None or at < than


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


def _merge_field_visit(f: Facts, data: AppointmentEvent) -> dict[str, Any]:
    """An on-site appointment (fieldwork): the earliest check-in, check-out and no-show each win, with
    the travel or work time their event carries; the technician is the one named by the newest event."""
    rest, v = _upsert(
        f.field_visits,
        "appointment_id",
        data.appointment_id,
        lambda: FieldVisit(appointment_id=data.appointment_id),
    )
    upd: dict[str, Any] = {}
    at = data.occurred_at
    if v.technician_at is None or (at, data.technician_id) > (v.technician_at, v.technician_id or ""):
        upd.update(technician_id=data.technician_id, technician_at=at)
    if isinstance(data, VisitCheckedIn) and _earlier(at, v.checked_in_at):
        upd.update(checked_in_at=at, travel_s=data.travel_s)
    elif isinstance(data, VisitCheckedOut) and _earlier(at, v.checked_out_at):
        upd.update(checked_out_at=at, work_s=data.work_s)
    elif isinstance(data, AppointmentNoShow) and _earlier(at, v.no_show_at):
        upd.update(no_show_at=at, absent=data.absent)
    merged = v.model_copy(update=upd)
    return {"field_visits": sorted([*rest, merged], key=lambda x: x.appointment_id)}


def _part_line(f: Facts, key: str, part_id: str, change: dict[str, Any]) -> dict[str, Any]:
    rest = [p for p in f.parts if p.line_key != key]
    line = next((p for p in f.parts if p.line_key == key), None) or PartUse(line_key=key, part_id=part_id)
    merged = line.model_copy(update=change)
    return {"parts": sorted([*rest, merged], key=lambda p: p.line_key)}


def _parts_used(f: Facts, data: StockConsumed) -> dict[str, Any]:
    """Parts taken from stock for a service-report line; a line is counted once, by report and line id."""
    key = f"{data.report_id}:{data.line_id}"
    if any(p.line_key == key and p.quantity for p in f.parts):
        return {}
    change = {
        "quantity": data.quantity,
        "unit_cost_cents": data.unit_cost_cents,
        "location_id": data.location_id,
        "consumed_at": data.occurred_at,
    }
    return _part_line(f, key, data.part_id, change)


def _stock_low(f: Facts, data: StockLow) -> dict[str, Any]:
    """A low-stock alert is its own subject (one per event): it is recorded once."""
    if f.stock_low is not None:
        return {}
    return {"stock_low": StockAlert(location_id=data.location_id, part_id=data.part_id, at=data.occurred_at)}


def _parts_returned(f: Facts, data: StockReceived) -> dict[str, Any]:
    """Parts given back from a service-report line (removed from a draft, or its report signed meanwhile):
    they leave the ticket's parts. A line's parts come back once: a redelivery changes nothing, and a
    return seen before its consumption waits for it."""
    if data.reason != "returned" or data.report_id is None or data.line_id is None:
        return {}
    key = f"{data.report_id}:{data.line_id}"
    if any(p.line_key == key and p.returned >= data.quantity for p in f.parts):
        return {}
    return _part_line(f, key, data.part_id, {"returned": data.quantity})


def _created(f: Facts, data: TicketCreated) -> dict[str, Any]:
    return {
        **_apply_ticket_facts(f, data, data.created_at),
        "created_at": _min(f.created_at, data.created_at),
    }


def _reopened(f: Facts, data: TicketReopened) -> dict[str, Any]:
    upd = _apply_ticket_facts(f, data, data.reopened_at)
    upd["reopen_count"] = max(f.reopen_count, data.reopen_count)
    upd["last_reopened_at"] = _max(f.last_reopened_at, data.reopened_at)
    return upd


def _updated(f: Facts, data: TicketUpdated) -> dict[str, Any]:
    upd: dict[str, Any] = {}
    if data.change == "customer_replied":
        upd["resumes"] = _add_unique(f.resumes, data.updated_at)
    if data.priority is not None and _newer(data.updated_at, f.priority_at):
        upd.update(priority=data.priority.value, priority_at=data.updated_at)
    return upd


def _merged(f: Facts, data: TicketMerged) -> dict[str, Any]:
    return {"merged_alerts": max(f.merged_alerts, data.alert_count - 1)}


def _closed(f: Facts, data: TicketClosed) -> dict[str, Any]:
    return {"closed_at": _max(f.closed_at, data.closed_at)}


def _cancelled(f: Facts, data: TicketCancelled) -> dict[str, Any]:
    return {"cancelled_at": _min(f.cancelled_at, data.cancelled_at)}


def _assigned(f: Facts, data: WorkOrderAssigned) -> dict[str, Any]:
    upd = _assignee(f, data.occurred_at, data.technician_id, data.grid_id, data.team_id)
    upd["first_assigned_at"] = _min(f.first_assigned_at, data.occurred_at)
    return upd


def _reassigned(f: Facts, data: WorkOrderReassigned) -> dict[str, Any]:
    return _assignee(f, data.occurred_at, data.to_technician_id, data.grid_id)


def _accepted(f: Facts, data: WorkOrderAccepted) -> dict[str, Any]:
    upd = _assignee(f, data.occurred_at, data.technician_id, data.grid_id)
    upd["first_response_at"] = _min(f.first_response_at, data.occurred_at)
    return upd


def _started(f: Facts, data: WorkOrderStarted) -> dict[str, Any]:
    return {"resumes": _add_unique(f.resumes, data.occurred_at)}


def _pending(f: Facts, data: WorkOrderPending) -> dict[str, Any]:
    return {"pauses": _add_unique(f.pauses, data.occurred_at)}


def _escalated(f: Facts, data: WorkOrderEscalated) -> dict[str, Any]:
    return {**_assignee(f, data.occurred_at, data.to_technician_id, data.grid_id), "escalated": True}


def _resolved(f: Facts, data: WorkOrderResolved) -> dict[str, Any]:
    upd = _assignee(f, data.occurred_at, data.technician_id, data.grid_id)
    rounds = dict(f.resolved_rounds)
    key = str(data.round)
    rounds[key] = min(rounds[key], data.occurred_at) if key in rounds else data.occurred_at
    upd.update(resolved_rounds=rounds, first_resolved_at=_min(f.first_resolved_at, data.occurred_at))
    upd["escalated"] = f.escalated or data.escalated
    return upd


def _breached(f: Facts, data: SlaBreached) -> dict[str, Any]:
    return {"breached_clocks": _add_unique(f.breached_clocks, data.clock.value)}


def _surveyed(f: Facts, data: SurveySubmitted) -> dict[str, Any]:
    if any(s.survey_id == data.survey_id for s in f.surveys):
        return {}
    survey = Survey(
        survey_id=data.survey_id,
        round=data.round,
        csat=data.csat,
        nps=data.nps,
        technician_id=data.technician_id,
        submitted_at=data.occurred_at,
    )
    return {"surveys": sorted([*f.surveys, survey], key=lambda s: s.survey_id)}


# What each event type changes in the facts. A type not listed here is looked up by its base classes
# (every complaint event merges its complaint, every visit event its visit); other types change nothing.
_FOLDS: dict[type[BaseModel], Callable[[Facts, Any], dict[str, Any]]] = {
    TicketCreated: _created,
    TicketReopened: _reopened,
    TicketUpdated: _updated,
    TicketMerged: _merged,
    TicketClosed: _closed,
    TicketCancelled: _cancelled,
    WorkOrderAssigned: _assigned,
    WorkOrderReassigned: _reassigned,
    WorkOrderAccepted: _accepted,
    WorkOrderStarted: _started,
    WorkOrderPending: _pending,
    WorkOrderEscalated: _escalated,
    WorkOrderResolved: _resolved,
    SlaBreached: _breached,
    SurveySubmitted: _surveyed,
    ComplaintEvent: _merge_complaint,
    VisitEvent: _merge_visit,
    AppointmentEvent: _merge_field_visit,
    StockConsumed: _parts_used,
    StockReceived: _parts_returned,
    StockLow: _stock_low,
}


def fold(f: Facts, data: BaseModel) -> Facts:
    """Return the facts after one more event; the result does not depend on the order of events."""
    apply = next((_FOLDS[t] for t in type(data).__mro__ if t in _FOLDS), None)
    upd = apply(f, data) if apply is not None else {}
    if not upd:
        return f
    return f.model_copy(update=upd)
