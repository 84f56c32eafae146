"""Kafka handlers: intake's ticket events keep the local ticket-facts copy; routing's resolutions schedule
visits; a closed, cancelled or reopened ticket cancels its open visits; personal-data requests (erasure,
contact preferences) from intake."""

from __future__ import annotations

from aftersales.followup.privacy import PersonalData
from aftersales.followup.service import FollowUps
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketReopened,
    WorkOrderResolved,
)
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested, ExportRequested
from aftersales.shared.kafka import subscribe
from aftersales.shared.routes import EventRoute, EventRoutes
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.PRIVACY)


def register(
    runtime: ServiceRuntime, followups: FollowUps, personal_data: PersonalData, export: EventRoute
) -> None:
    routes = EventRoutes(
        {
            ErasureRequested: personal_data.on_erasure_requested,
            ExportRequested: export,
            ContactPreferencesChanged: personal_data.on_preferences_changed,
            TicketCreated: followups.on_ticket_created,
            TicketReopened: followups.on_ticket_reopened,
            TicketClosed: followups.on_ticket_closed,
            TicketCancelled: followups.on_ticket_cancelled,
            WorkOrderResolved: followups.on_work_order_resolved,
        }
    )
    subscribe(runtime.broker, runtime.settings, CONSUMES, routes)
