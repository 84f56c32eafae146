"""What routing's HTTP API reads and returns: request bodies and the read models of grids, technicians,
work orders, policies and grid planning, built from the stored documents."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from aftersales.routing.domain import ID_PATTERN, PlanningFinding, ServiceGrid, Status, Technician
from aftersales.routing.field_holds import holds_of, pending_reason
from aftersales.routing.sla import SlaPolicy
from aftersales.routing.store import grid_of, presence_of, technician_of
from aftersales.shared.contracts.desk import TechnicianStatus


class GridRead(ServiceGrid):
    surge_on: bool
    surge_trigger: str | None = None
    queue_length: int | None = None


class TechnicianRead(Technician):
    active_work_orders: int
    last_assigned_at: datetime | None = None
    status: TechnicianStatus = Field(
        default=TechnicianStatus.AVAILABLE, description="set by the technician; only available takes new work"
    )
    last_heartbeat_at: datetime | None = Field(default=None, description="his mobile client's last heartbeat")
    silent_since: datetime | None = Field(
        default=None, description="set while his client is silent past the limit (flagged to the supervisor)"
    )


class ClockRead(BaseModel):
    """One SLA clock. While the work order waits on the customer (paused) a running clock has no due
    time: `due_at` is null and `paused_at` and `remaining_s` say since when and how much business time
    is left; on resume `due_at` is recomputed (the pause added) and the two are null again."""

    target_minutes: float
    started_at: datetime
    due_at: datetime | None = Field(
        description="when it breaches; null while paused (see paused_at, remaining_s) or while it cannot "
        "be known"
    )
    paused_at: datetime | None = Field(
        default=None,
        description="set while the clock is paused (waiting on the customer, or for parts when the policy "
        "pauses on them): since when",
    )
    remaining_s: float | None = Field(
        default=None, description="while paused: business seconds left until it breaches, as at the pause"
    )
    stopped_at: datetime | None = None
    breached: bool = False
    warnings_pct: list[int] = Field(default_factory=list)


class WorkOrderRead(BaseModel):
    ticket_id: str
    round: int
    status: Status
    grid_id: str
    technician_id: str | None
    tier: int | None = None
    via: str | None = None
    priority: str
    category: str
    device_type: str
    region_code: str
    escalation_level: str | None = None
    resolution_code: str | None = None
    started_at: datetime
    assigned_at: datetime | None = None
    updated_at: datetime
    paused_since: datetime | None = None
    offer_no: int | None = Field(default=None, description="pool (抢单): the round's latest offer, 1, 2, ...")
    offered_at: datetime | None = Field(default=None, description="pool: when it was last put on offer")
    fallback_at: datetime | None = Field(
        default=None, description="pool: while offered, when it falls back to automatic dispatch"
    )
    pending_reason: str | None = Field(
        default=None,
        description="why it waits now: `customer` (pending on the customer), `waiting_for_parts` (until the "
        "next check-in or signed report) or `customer_window` (a later visit window the customer chose); "
        "whether it pauses the resolution clock is the SLA policy's `pause_on`",
    )
    pending_until: datetime | None = Field(
        default=None, description="for `customer_window`: when the customer time ends (the window's start)"
    )
    first_response: ClockRead
    resolution: ClockRead


class ResolveIn(BaseModel):
    resolution_code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class HandDispatchIn(BaseModel):
    """A supervisor's dispatch by hand: to a named technician, to another grid, or both."""

    technician_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=ID_PATTERN)
    grid_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=ID_PATTERN)
    reason: str = Field(min_length=1, max_length=500)
    override_reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="required when the technician fails the skill, tier, capacity or availability check",
    )
    expected_status: Status | None = Field(
        default=None, description="the status the supervisor saw; 409 if the work order moved on meanwhile"
    )


class PoolReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why (declined, or returned to the pool)")


class StatusIn(BaseModel):
    status: TechnicianStatus


class ReasonIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class SurgeIn(BaseModel):
    on: bool


class SurgeRead(BaseModel):
    grid_id: str
    surge_on: bool
    changed: bool


class PlanningRead(BaseModel):
    grid_id: str
    open_work_orders: int
    technicians_on_duty: int
    per_technician: float
    suggested_split: list[list[str]]
    suggestion: str


class PolicyRead(SlaPolicy):
    version: int
    replanned_work_orders: int | None = None


def clock_read(state: Mapping[str, Any], paused_since: datetime | None = None) -> ClockRead:
    paused = paused_since is not None and state.get("stopped_at") is None
    return ClockRead(
        target_minutes=state["target_minutes"],
        started_at=state["started_at"],
        due_at=None if paused else state.get("due_at"),
        paused_at=paused_since if paused else None,
        remaining_s=state.get("remaining_s") if paused else None,
        stopped_at=state.get("stopped_at"),
        breached=100 in state.get("fired", []),
        warnings_pct=[p for p in state.get("fired", []) if p < 100],
    )


def work_order_read(doc: Mapping[str, Any]) -> WorkOrderRead:
    facts = doc["facts"]
    holds = holds_of(doc.get("fieldwork"))
    reason, until = pending_reason(doc["status"], holds, datetime.now(UTC))
    resolution = doc["sla"]["resolution"]
    paused_since = doc.get("paused_since")
    if paused_since is None and holds.parts.since is not None and resolution.get("due_at") is None:
        paused_since = holds.parts.since  # the policy pauses the clock while waiting for parts
    return WorkOrderRead(
        ticket_id=doc["_id"],
        round=doc["round"],
        status=doc["status"],
        grid_id=doc["grid_id"],
        technician_id=doc.get("technician_id"),
        tier=doc.get("tier"),
        via=doc.get("via"),
        priority=facts["priority"],
        category=facts["category"],
        device_type=facts["device_type"],
        region_code=facts["region_code"],
        escalation_level=doc.get("escalation_level"),
        resolution_code=doc.get("resolution_code"),
        started_at=doc["started_at"],
        assigned_at=doc.get("assigned_at"),
        updated_at=doc["updated_at"],
        paused_since=doc.get("paused_since"),
        offer_no=doc.get("offer_no") or None,
        offered_at=doc.get("offered_at"),
        fallback_at=doc.get("fallback_at"),
        first_response=clock_read(doc["sla"]["first_response"], doc.get("paused_since")),
        pending_reason=reason,
        pending_until=until,
        resolution=clock_read(resolution, paused_since),
    )


def grid_read(doc: Mapping[str, Any], queue_length: int) -> GridRead:
    return GridRead(
        **grid_of(doc).model_dump(),
        surge_on=bool(doc.get("surge_on")),
        surge_trigger=doc.get("surge_trigger"),
        queue_length=queue_length,
    )


def technician_read(doc: Mapping[str, Any]) -> TechnicianRead:
    tech, presence = technician_of(doc), presence_of(doc)
    return TechnicianRead(
        **tech.model_dump(),
        active_work_orders=int(doc.get("active_work_orders", 0)),
        last_assigned_at=doc.get("last_assigned_at"),
        status=presence.status,
        last_heartbeat_at=presence.last_heartbeat_at,
        silent_since=doc.get("silent_since"),
    )


def planning_read(finding: PlanningFinding) -> PlanningRead:
    return PlanningRead.model_validate(finding, from_attributes=True)
