"""Kafka handlers: the events that call for a message (tickets, assignments, feedback), the ticket
and assignment facts notify keeps to know whose a ticket is and where it is worked, and personal-data
requests (erasure, contact preferences), fieldwork's appointments and a silent technician."""

from __future__ import annotations

from aftersales.notify.fieldnotices import FieldNotices
from aftersales.notify.privacy import PersonalData
from aftersales.notify.service import Inbox, Notifications
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.desk import TechnicianSilent
from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintOpened,
    ComplaintUpdated,
    SlaBreached,
    SlaWarning,
    SurveySent,
    TicketCreated,
    TicketReopened,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderReassigned,
)
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
)
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested, ExportRequested
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import subscribe
from aftersales.shared.routes import EventRoute, EventRoutes
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FEEDBACK, Topic.PRIVACY, Topic.FIELDWORK)


def register(
    runtime: ServiceRuntime,
    notifications: Notifications,
    personal_data: PersonalData,
    field: FieldNotices,
    export: EventRoute,
    inbox: Inbox,
) -> None:
    async def ticket_created(created: TicketCreated, event: CloudEvent) -> None:
        await inbox.on_ticket_created(created)  # a mail's sender first: the acknowledgement goes to them
        await notifications.on_ticket_created(created, event)

    routes = EventRoutes(
        {
            ErasureRequested: personal_data.on_erasure_requested,
            ExportRequested: export,
            ContactPreferencesChanged: personal_data.on_preferences_changed,
            TicketCreated: ticket_created,
            TicketReopened: notifications.on_ticket_reopened,
            WorkOrderAssigned: notifications.on_assigned,
            WorkOrderReassigned: notifications.on_assigned,
            SlaWarning: notifications.on_sla_warning,
            SlaBreached: notifications.on_sla_breached,
            WorkOrderEscalated: notifications.on_escalated,
            SurveySent: notifications.on_survey_sent,
            ComplaintOpened: notifications.on_complaint,
            ComplaintUpdated: notifications.on_complaint,
            ComplaintClosed: notifications.on_complaint,
            AppointmentBooked: field.on_appointment,
            AppointmentRescheduled: field.on_appointment,
            AppointmentCancelled: field.on_appointment,
            TechnicianSilent: field.on_technician_silent,
        }
    )
    subscribe(runtime.broker, runtime.settings, CONSUMES, routes)
