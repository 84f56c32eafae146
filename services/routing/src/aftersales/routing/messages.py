"""The events routing publishes on `aftersales.assignments.v1`, built from a work order's fields. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aftersales.routing.assignment import Candidate, Via, WorkNeed
from aftersales.routing.domain import Action, ServiceGrid, Technician, WorkOrder
from aftersales.shared.contracts.desk import (
    GridConfigured,
    HandCheck,
    TechnicianConfigured,
    TechnicianSilent,
    TechnicianStatus,
    TechnicianStatusChanged,
    WorkOrderClaimed,
    WorkOrderDeclined,
    WorkOrderDispatchedByHand,
    WorkOrderOffered,
    WorkOrderReturned,
)
from aftersales.shared.contracts.events import (
    SlaBreached,
    SlaClock,
    SlaWarning,
    SurgeSwitchedOff,
    SurgeSwitchedOn,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderPending,
    WorkOrderQueued,
    WorkOrderReassigned,
    WorkOrderResolved,
    WorkOrderStarted,
)
from aftersales.shared.envelope import CloudEvent, new_event

SOURCE = "/aftersales/routing"


def event(data: Any, subject: str) -> CloudEvent:
    return new_event(data, source=SOURCE, subject=subject)


def assigned(
    ticket_id: str,
    *,
    grid_id: str,
    round_: int,
    facts: Mapping[str, Any],
    sla: Mapping[str, Mapping[str, Any]],
    candidate: Candidate,
    via: Via,
    now: datetime,
) -> CloudEvent:
    return event(
        WorkOrderAssigned(
            ticket_id=ticket_id,
            grid_id=grid_id,
            round=round_,
            occurred_at=now,
            technician_id=candidate.technician_id,
            team_id=candidate.team_id,
            tier=candidate.tier,
            # v1's `via` predates the pool: a claim is published as direct, `claimed` tells it apart.
            via="direct" if via == "pool" else via,
            priority=facts["priority"],
            category=facts["category"],
            first_response_due=sla["first_response"]["due_at"],
            resolution_due=sla["resolution"]["due_at"],
        ),
        ticket_id,
    )


def queued(
    ticket_id: str, grid_id: str, round_: int, now: datetime, *, reason: str, need: WorkNeed
) -> CloudEvent:
    return event(
        WorkOrderQueued(
            ticket_id=ticket_id,
            grid_id=grid_id,
            round=round_,
            occurred_at=now,
            reason=reason,
            priority=need.priority,  # type: ignore[arg-type]
            category=need.category,  # type: ignore[arg-type]
        ),
        ticket_id,
    )


def surge_switched(grid_id: str, *, on: bool, trigger: str, backlog: int, now: datetime) -> CloudEvent:
    data: SurgeSwitchedOn | SurgeSwitchedOff
    if on:
        data = SurgeSwitchedOn(grid_id=grid_id, trigger=trigger, backlog=backlog, occurred_at=now)  # type: ignore[arg-type]
    else:
        data = SurgeSwitchedOff(grid_id=grid_id, trigger=trigger, backlog=backlog, occurred_at=now)  # type: ignore[arg-type]
    return event(data, grid_id)


def escalated(
    wo: WorkOrder,
    now: datetime,
    *,
    level: str,
    reason: str,
    to_technician_id: str | None,
    supervisor_id: str | None,
) -> CloudEvent:
    data = WorkOrderEscalated(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        level=level,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        from_technician_id=wo.technician_id,
        to_technician_id=to_technician_id,
        supervisor_id=supervisor_id,
    )
    return event(data, wo.ticket_id)


def reassigned(
    wo: WorkOrder, now: datetime, *, to_technician_id: str, reason: str, grid_id: str | None = None
) -> CloudEvent:
    data = WorkOrderReassigned(
        ticket_id=wo.ticket_id,
        grid_id=grid_id or wo.grid_id,
        round=wo.round,
        occurred_at=now,
        from_technician_id=wo.technician_id,
        to_technician_id=to_technician_id,
        reason=reason,
    )
    return event(data, wo.ticket_id)


def dispatched_by_hand(
    wo: WorkOrder,
    now: datetime,
    *,
    grid_id: str,
    to_technician_id: str | None,
    supervisor_id: str,
    reason: str,
    overridden: list[HandCheck],
    override_reason: str | None,
) -> CloudEvent:
    """Return the desk's record of a dispatch by hand: who moved the work order, where, why."""
    if grid_id != wo.grid_id:
        kind = "transfer"
    elif wo.technician_id is None or not wo.holds_slot:
        kind = "assign"
    else:
        kind = "reassign"
    data = WorkOrderDispatchedByHand(
        ticket_id=wo.ticket_id,
        grid_id=grid_id,
        round=wo.round,
        occurred_at=now,
        kind=kind,  # type: ignore[arg-type]
        supervisor_id=supervisor_id,
        from_grid_id=wo.grid_id,
        from_technician_id=wo.technician_id if wo.holds_slot else None,
        to_technician_id=to_technician_id,
        reason=reason,
        overridden=overridden,
        override_reason=override_reason if overridden else None,
    )
    return event(data, wo.ticket_id)


def technician_status_changed(
    tech_id: str, grid_id: str, *, status: TechnicianStatus, previous: TechnicianStatus, now: datetime
) -> CloudEvent:
    data = TechnicianStatusChanged(
        technician_id=tech_id, grid_id=grid_id, occurred_at=now, status=status, previous_status=previous
    )
    return event(data, tech_id)


def grid_configured(grid: ServiceGrid, version: int, now: datetime) -> CloudEvent:
    """Return the copy of a grid's calendar other services keep (fieldwork's booking hours)."""
    return event(
        GridConfigured(grid_id=grid.id, calendar=grid.calendar, version=version, occurred_at=now), grid.id
    )


def technician_configured(tech: Technician, version: int, now: datetime) -> CloudEvent:
    """Return the copy of a technician's grid, shift and duty other services keep (no name)."""
    data = TechnicianConfigured(
        technician_id=tech.id,
        grid_id=tech.grid_id,
        occurred_at=now,
        shift=tech.shift,
        on_duty=tech.on_duty,
        version=version,
    )
    return event(data, tech.id)


def technician_silent(
    tech_id: str,
    grid_id: str,
    *,
    supervisor_id: str | None,
    last_heartbeat_at: datetime,
    silent_after_s: float,
    held_ticket_ids: list[str],
    now: datetime,
) -> CloudEvent:
    data = TechnicianSilent(
        technician_id=tech_id,
        grid_id=grid_id,
        occurred_at=now,
        supervisor_id=supervisor_id,
        last_heartbeat_at=last_heartbeat_at,
        silent_after_s=silent_after_s,
        held_ticket_ids=held_ticket_ids,
    )
    return event(data, tech_id)


def technician_acted(wo: WorkOrder, action: Action, now: datetime, *, reason: str, code: str) -> CloudEvent:
    """Return the event of an accept, start, pending-customer or resolve."""
    ticket_id, tech = wo.ticket_id, wo.technician_id
    base = {"ticket_id": ticket_id, "grid_id": wo.grid_id, "round": wo.round, "occurred_at": now}
    data: Any
    if action is Action.ACCEPT:
        data = WorkOrderAccepted(**base, technician_id=tech)
    elif action is Action.START:
        data = WorkOrderStarted(**base, technician_id=tech)
    elif action is Action.PENDING_CUSTOMER:
        data = WorkOrderPending(**base, technician_id=tech, reason=reason)
    else:
        facts = wo.facts
        data = WorkOrderResolved(
            **base,
            technician_id=tech,
            resolution_code=code,
            escalated=bool(wo.escalation_level),
            priority=facts["priority"],
            category=facts["category"],
        )
    return event(data, ticket_id)


def resumed(wo: WorkOrder, now: datetime) -> CloudEvent:
    """Return the event of the customer's pause ending (work goes on)."""
    data = WorkOrderStarted(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        technician_id=wo.technician_id,
    )
    return event(data, wo.ticket_id)


def threshold_fired(
    wo: WorkOrder, clock: SlaClock, pct: int, *, due_at: datetime, now: datetime
) -> CloudEvent:
    """Return the warning (50 %, 75 %) or breach (100 %) of one SLA clock."""
    base = {
        "ticket_id": wo.ticket_id,
        "grid_id": wo.grid_id,
        "round": wo.round,
        "occurred_at": now,
        "clock": clock,
        "due_at": due_at,
        "technician_id": wo.technician_id,
    }
    data: Any = SlaBreached(**base) if pct == 100 else SlaWarning(**base, threshold_pct=pct)
    return event(data, wo.ticket_id)


# ------------------------------------------------------------------------------- the grab-order pool


def offered(
    wo: WorkOrder, now: datetime, *, offer_no: int, fallback_at: datetime, eligible: int
) -> CloudEvent:
    data = WorkOrderOffered(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        offer_no=offer_no,
        fallback_at=fallback_at,
        eligible_technicians=eligible,
        priority=wo.facts["priority"],
        category=wo.facts["category"],
    )
    return event(data, wo.ticket_id)


def claimed(wo: WorkOrder, now: datetime, *, technician_id: str) -> CloudEvent:
    data = WorkOrderClaimed(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        technician_id=technician_id,
        offer_no=wo.offer_no,
    )
    return event(data, wo.ticket_id)


def declined(
    wo: WorkOrder, now: datetime, *, technician_id: str, reason: str, still_eligible: int
) -> CloudEvent:
    data = WorkOrderDeclined(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        technician_id=technician_id,
        offer_no=wo.offer_no,
        reason=reason,
        still_eligible=still_eligible,
    )
    return event(data, wo.ticket_id)


def returned(wo: WorkOrder, now: datetime, *, reason: str) -> CloudEvent:
    data = WorkOrderReturned(
        ticket_id=wo.ticket_id,
        grid_id=wo.grid_id,
        round=wo.round,
        occurred_at=now,
        technician_id=str(wo.technician_id),
        reason=reason,
    )
    return event(data, wo.ticket_id)
