"""Kafka handlers of routing: ticket events start, resume, re-plan and end work orders; fieldwork's events
pause and move their resolution clocks (each handler is idempotent: every branch is guarded by the work
order's state)."""

from __future__ import annotations

from aftersales.routing.service import RoutingService
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketReopened,
    TicketUpdated,
)
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    ServiceReportSigned,
    VisitCheckedIn,
    WorkOrderWaitingForParts,
)
from aftersales.shared.kafka import subscribe
from aftersales.shared.routes import EventRoutes
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.FIELDWORK)


def register(runtime: ServiceRuntime, service: RoutingService) -> None:
    """Subscribe routing's handler table to the topics it consumes."""
    routes = EventRoutes(
        {
            TicketCreated: service.on_ticket_created,
            TicketReopened: service.on_ticket_reopened,
            TicketUpdated: service.on_ticket_updated,
            TicketCancelled: service.on_ticket_cancelled,
            TicketClosed: service.on_ticket_closed,
            WorkOrderWaitingForParts: service.field.on_waiting_for_parts,
            VisitCheckedIn: service.field.on_checked_in,
            ServiceReportSigned: service.field.on_report_signed,
            AppointmentBooked: service.field.on_booked,
            AppointmentRescheduled: service.field.on_rescheduled,
            AppointmentCancelled: service.field.on_cancelled,
        }
    )
    subscribe(runtime.broker, runtime.settings, CONSUMES, routes)
