"""Kafka handlers: ticket facts (and the complaint channel), one survey per resolution, and low CSAT
answers (our own SurveySubmitted events) turning into complaints — durable because they ride the outbox;
erasure requests from intake."""

from __future__ import annotations

from aftersales.feedback.privacy import PersonalData
from aftersales.feedback.service import Complaints, Surveys
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import (
    SurveySubmitted,
    TicketCreated,
    TicketReopened,
    WorkOrderResolved,
)
from aftersales.shared.contracts.privacy import ErasureRequested, ExportRequested
from aftersales.shared.kafka import subscribe
from aftersales.shared.routes import EventRoute, EventRoutes
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FEEDBACK, Topic.PRIVACY)


def register(
    runtime: ServiceRuntime,
    surveys: Surveys,
    complaints: Complaints,
    personal_data: PersonalData,
    export: EventRoute,
) -> None:
    routes = EventRoutes(
        {
            ErasureRequested: personal_data.on_erasure_requested,
            ExportRequested: export,
            TicketCreated: complaints.on_ticket_created,
            TicketReopened: complaints.on_ticket_reopened,
            WorkOrderResolved: surveys.on_work_order_resolved,
            SurveySubmitted: complaints.on_survey_submitted,
        }
    )
    subscribe(runtime.broker, runtime.settings, CONSUMES, routes)
