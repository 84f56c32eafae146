"""Kafka handlers: intake's ticket events say whose customer a ticket is and when it closes; routing's
assignment events say which technician holds it, and its configuration events give grids' calendars and
technicians' shifts (the booking hours); intake's erasure requests remove the customer's personal data.
They only translate events into fieldwork's use cases."""

from __future__ import annotations

from aftersales.fieldwork.domain import WorkOrderStatus
from aftersales.fieldwork.privacy import PersonalData
from aftersales.fieldwork.service import Fieldwork
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.desk import GridConfigured, TechnicianConfigured
from aftersales.shared.contracts.events import (
    AssignmentEvent,
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketReopened,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderReassigned,
    WorkOrderResolved,
)
from aftersales.shared.contracts.privacy import ErasureRequested, ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import subscribe
from aftersales.shared.routes import EventRoute, EventRoutes
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.PRIVACY)


def routes(fieldwork: Fieldwork) -> dict[type, EventRoute]:
    """The table {event type: handler} of the events fieldwork acts on."""

    async def created(ticket: TicketCreated | TicketReopened, _: CloudEvent) -> None:
        await fieldwork.remember_ticket(ticket.ticket_id, ticket.submitted_by)

    async def closed(ticket: TicketClosed, _: CloudEvent) -> None:
        await fieldwork.close_ticket(ticket.ticket_id, ticket.closed_at)

    async def cancelled(ticket: TicketCancelled, _: CloudEvent) -> None:
        await fieldwork.close_ticket(ticket.ticket_id, ticket.cancelled_at)

    async def hand_to(technician_id: str | None, wo: AssignmentEvent, status: WorkOrderStatus) -> None:
        await fieldwork.assign(
            wo.ticket_id, technician_id=technician_id, grid_id=wo.grid_id, status=status, at=wo.occurred_at
        )

    async def assigned(wo: WorkOrderAssigned, _: CloudEvent) -> None:
        await hand_to(wo.technician_id, wo, WorkOrderStatus.ASSIGNED)

    async def reassigned(wo: WorkOrderReassigned, _: CloudEvent) -> None:
        await hand_to(wo.to_technician_id, wo, WorkOrderStatus.ASSIGNED)

    async def escalated(wo: WorkOrderEscalated, _: CloudEvent) -> None:
        if wo.to_technician_id is not None:  # to tier 2: the work order changes hands
            await hand_to(wo.to_technician_id, wo, WorkOrderStatus.ASSIGNED)

    async def resolved(wo: WorkOrderResolved, _: CloudEvent) -> None:
        await hand_to(wo.technician_id, wo, WorkOrderStatus.RESOLVED)

    async def grid_configured(grid: GridConfigured, _: CloudEvent) -> None:
        await fieldwork.grid_configured(grid)

    async def technician_configured(tech: TechnicianConfigured, _: CloudEvent) -> None:
        await fieldwork.technician_configured(tech)

    return {
        TicketCreated: created,
        TicketReopened: created,
        TicketClosed: closed,
        TicketCancelled: cancelled,
        WorkOrderAssigned: assigned,
        WorkOrderReassigned: reassigned,
        WorkOrderEscalated: escalated,
        WorkOrderResolved: resolved,
        GridConfigured: grid_configured,
        TechnicianConfigured: technician_configured,
    }


def register(
    runtime: ServiceRuntime, fieldwork: Fieldwork, personal_data: PersonalData, export: EventRoute
) -> None:
    table = {
        **routes(fieldwork),
        ErasureRequested: personal_data.on_erasure_requested,
        ExportRequested: export,
    }
    subscribe(runtime.broker, runtime.settings, CONSUMES, EventRoutes(table))
