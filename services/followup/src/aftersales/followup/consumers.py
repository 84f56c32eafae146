"""Kafka handlers: intake's ticket events keep the local ticket-facts copy; routing's resolutions schedule
visits; a closed, cancelled or reopened ticket cancels its open visits."""

from __future__ import annotations

from aftersales.followup.domain import Resolution
from aftersales.followup.service import FollowUps
from aftersales.followup.store import VisitStore
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    WorkOrderResolved,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import subscribe
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS)
FACT_FIELDS = tuple(TicketFacts.model_fields)


def register(runtime: ServiceRuntime, store: VisitStore, followups: FollowUps) -> None:
    async def handle(event: CloudEvent) -> None:
        model = event.model()
        if isinstance(model, TicketCreated):
            await store.remember_ticket(event.id, model.model_dump(mode="json", include=set(FACT_FIELDS)), 1)
        elif isinstance(model, TicketReopened):
            facts = model.model_dump(mode="json", include=set(FACT_FIELDS))
            await store.remember_ticket(event.id, facts, model.reopen_count + 1)
            await followups.cancel_ticket_visits(model.ticket_id, "ticket_reopened")
        elif isinstance(model, TicketClosed):
            await store.mark_ticket(event.id, model.ticket_id, "closed")
            await followups.cancel_ticket_visits(model.ticket_id, f"ticket_closed:{model.reason}")
        elif isinstance(model, TicketCancelled):
            await store.mark_ticket(event.id, model.ticket_id, "cancelled")
            await followups.cancel_ticket_visits(model.ticket_id, "ticket_cancelled")
        elif isinstance(model, WorkOrderResolved):
            await followups.on_resolved(
                Resolution(
                    ticket_id=model.ticket_id,
                    round=model.round,
                    technician_id=model.technician_id,
                    grid_id=model.grid_id,
                    priority=model.priority,
                    category=model.category,
                    resolved_at=model.occurred_at,
                )
            )

    subscribe(runtime.broker, runtime.settings, CONSUMES, handle)
