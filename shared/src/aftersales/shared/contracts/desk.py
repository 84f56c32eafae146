"""Events of the service desk on `aftersales.assignments.v1` (routing): a supervisor dispatching a work
order by hand (派单/改派/转派), and technicians' availability (their own status, a silent mobile client)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from aftersales.shared.contracts.common import EventData, FreeText
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
