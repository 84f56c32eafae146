"""Events of the service desk on `aftersales.assignments.v1` (routing): a supervisor dispatching a work
order by hand (派单/改派/转派), technicians' availability (their own status, a silent mobile client), the
grab-order pool (抢单: offered, claimed, declined, returned), and the configuration other services copy
(a grid's business calendar, a technician's shift)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.calendar import BusinessCalendar, WorkingWindow
from aftersales.shared.contracts.common import Category, EventData, FreeText, Priority
from aftersales.shared.contracts.events import AssignmentEvent
from aftersales.shared.contracts.registry import event
from aftersales.shared.contracts.topics import Topic


class TechnicianStatus(StrEnum):
    """What a technician says of himself; only `available` takes new work."""

    AVAILABLE = "available"
    BUSY = "busy"
    BREAK = "break"
    OFF = "off"


HandCheck = Literal["skill", "tier", "capacity", "availability"]


@event("aftersales.assignment.dispatched-by-hand.v1", Topic.ASSIGNMENTS)
class WorkOrderDispatchedByHand(AssignmentEvent):
    """A supervisor assigned, reassigned or transferred a work order by hand (派单/改派/转派). The
    outcome follows as `reassigned` (a technician holds it) or `queued` (it waits in its new grid)."""

    kind: Literal["assign", "reassign", "transfer"] = Field(
        description="assign: nobody held it; reassign: another technician; transfer: another grid"
    )
    supervisor_id: str
    from_grid_id: str
    from_technician_id: str | None = None
    to_technician_id: str | None = Field(default=None, description="none: queued in the new grid")
    reason: FreeText
    overridden: list[HandCheck] = Field(
        default_factory=list, description="checks the named technician failed, dispatched anyway"
    )
    override_reason: FreeText | None = Field(default=None, description="why, when a check was overridden")


class TechnicianEvent(EventData):
    technician_id: str
    grid_id: str
    occurred_at: AwareDatetime


@event("aftersales.assignment.technician-status-changed.v1", Topic.ASSIGNMENTS)
class TechnicianStatusChanged(TechnicianEvent):
    """A technician set his own status (available, busy, break, off)."""

    status: TechnicianStatus
    previous_status: TechnicianStatus


@event("aftersales.assignment.technician-silent.v1", Topic.ASSIGNMENTS)
class TechnicianSilent(TechnicianEvent):
    """A technician's mobile client stopped sending heartbeats: he gets no new work, and what he holds is
    flagged to the grid supervisor (not moved). Once per silent spell; a heartbeat ends the spell."""

    supervisor_id: str | None = Field(default=None, description="the grid supervisor to look at it")
    last_heartbeat_at: AwareDatetime
    silent_after_s: float = Field(gt=0)
    held_ticket_ids: list[str] = Field(
        default_factory=list, description="the work orders he holds (bounded by his capacity)"
    )


# ------------------------------------------------------------------------------- the grab-order pool (抢单)


@event("aftersales.assignment.offered.v1", Topic.ASSIGNMENTS)
class WorkOrderOffered(AssignmentEvent):
    """A work order of a pooled grid is on offer (抢单): eligible technicians may claim it; unclaimed at
    `fallback_at` (or declined by every eligible technician) it goes to automatic dispatch. The
    first-response clock keeps running while it is on offer."""

    offer_no: int = Field(ge=1, description="1 for the first offer of the round, +1 on each return")
    fallback_at: AwareDatetime = Field(description="when an unclaimed offer falls back to dispatch")
    eligible_technicians: int = Field(ge=0, description="how many could claim it when offered")
    priority: Priority
    category: Category


@event("aftersales.assignment.claimed.v1", Topic.ASSIGNMENTS)
class WorkOrderClaimed(AssignmentEvent):
    """A technician claimed an offered work order (the first claim wins). `assigned` (via `pool`)
    follows in the same write."""

    technician_id: str
    offer_no: int = Field(ge=1)


@event("aftersales.assignment.declined.v1", Topic.ASSIGNMENTS)
class WorkOrderDeclined(AssignmentEvent):
    """A technician declined an offered work order: it is no longer offered to him."""

    technician_id: str
    offer_no: int = Field(ge=1)
    reason: FreeText
    still_eligible: int = Field(ge=0, description="technicians who may still claim it; 0: falls back now")


@event("aftersales.assignment.returned.v1", Topic.ASSIGNMENTS)
class WorkOrderReturned(AssignmentEvent):
    """The technician holding a pooled work order returned it to the pool; his slot is released and the
    work order is offered again (not to him)."""

    technician_id: str
    reason: FreeText


# ------------------------------------------------------------------------------- configuration copies


@event("aftersales.assignment.grid-configured.v1", Topic.ASSIGNMENTS)
class GridConfigured(EventData):
    """A grid was created or changed: its business calendar, for services that keep a copy (fieldwork
    books visits only inside it). The highest `version` of a grid is its current configuration."""

    grid_id: str
    calendar: BusinessCalendar
    version: int = Field(ge=1, description="+1 on each change of the grid; the highest wins")
    occurred_at: AwareDatetime


@event("aftersales.assignment.technician-configured.v1", Topic.ASSIGNMENTS)
class TechnicianConfigured(TechnicianEvent):
    """A technician was created or changed: his grid, weekly shift and whether he is on duty (no name:
    staff data stays in routing). The highest `version` of a technician is his current configuration."""

    shift: dict[int, list[WorkingWindow]] | None = Field(
        default=None, description="weekday (0 = Monday) -> windows in the grid's time zone; none = any time"
    )
    on_duty: bool
    version: int = Field(ge=1, description="+1 on each change of the technician; the highest wins")
