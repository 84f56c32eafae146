"""Kafka handlers of routing: ticket events start, resume and end work orders."""

from __future__ import annotations

from aftersales.routing.domain import Status
from aftersales.routing.lifecycle import Lifecycle
from aftersales.routing.router import Router
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    TicketUpdated,
)
from aftersales.shared.envelope import CloudEvent

FACT_FIELDS = tuple(TicketFacts.model_fields)


def make_ticket_handler(router: Router, lifecycle: Lifecycle):  # type: ignore[no-untyped-def]
    """Return the handler of `aftersales.tickets.v1` (idempotent: every branch is guarded by state)."""

    async def handle(event: CloudEvent) -> None:
        model = event.model()
        if isinstance(model, TicketCreated):
            await router.dispatch_round(
                facts=model.model_dump(mode="json", include=set(FACT_FIELDS)),
                started_at=model.created_at,
                round_=1,
                previous_technician_id=None,
            )
        elif isinstance(model, TicketReopened):
            existing = await router.store.work_order(model.ticket_id)
            previous = model.previous_technician_id or (existing or {}).get("technician_id")
            await router.dispatch_round(
                facts=model.model_dump(mode="json", include=set(FACT_FIELDS)),
                started_at=model.reopened_at,
                round_=model.reopen_count + 1,
                previous_technician_id=previous,
            )
        elif isinstance(model, TicketUpdated):
            if model.change == "customer_replied":
                await lifecycle.customer_replied(model.ticket_id)
            elif model.change == "priority_changed" and model.priority is not None:
                await lifecycle.priority_changed(model.ticket_id, model.priority.value)
        elif isinstance(model, TicketCancelled):
            await lifecycle.ended(model.ticket_id, Status.CANCELLED)
        elif isinstance(model, TicketClosed):
            await lifecycle.ended(model.ticket_id, Status.CLOSED)

    return handle
