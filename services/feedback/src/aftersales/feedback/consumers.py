"""Kafka handlers: ticket facts (and the complaint channel), one survey per resolution, and low CSAT
answers (our own SurveySubmitted events) turning into complaints — durable because they ride the outbox."""

from __future__ import annotations

from aftersales.feedback.domain import ComplaintSource, opens_complaint
from aftersales.feedback.service import Feedback
from aftersales.feedback.store import SOURCE
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import (
    SurveySubmitted,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    WorkOrderResolved,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import subscribe
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FEEDBACK)
FACT_FIELDS = set(TicketFacts.model_fields)


def register(runtime: ServiceRuntime, feedback: Feedback) -> None:
    async def handle(event: CloudEvent) -> None:
        model = event.model()
        if isinstance(model, TicketCreated | TicketReopened):
            await feedback.store.remember_ticket(event.id, model.model_dump(mode="json", include=FACT_FIELDS))
            if isinstance(model, TicketCreated) and model.category == Category.COMPLAINT:
                await feedback.open_complaint(
                    complaint_id=f"CP-{model.ticket_id}-channel",
                    source=ComplaintSource.CHANNEL,
                    ticket_id=model.ticket_id,
                    product_model=model.product_model,
                    opened_by=f"channel:{model.channel.value}",
                )
        elif isinstance(model, WorkOrderResolved):
            await feedback.send_survey(model.ticket_id, model.round, model.technician_id)
        elif (
            isinstance(model, SurveySubmitted)
            and event.source == SOURCE
            and opens_complaint(model.csat, feedback.survey_policy.complaint_csat_threshold)
        ):
            await feedback.open_complaint(
                complaint_id=f"CP-{model.survey_id}",
                source=ComplaintSource.LOW_CSAT,
                ticket_id=model.ticket_id,
                opened_by="survey",
                survey_id=model.survey_id,
            )

    subscribe(runtime.broker, runtime.settings, CONSUMES, handle)
