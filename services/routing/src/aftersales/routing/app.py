"""Wiring of the routing service: settings, runtime (MongoDB, Kafka, outbox, SLA timers), HTTP app."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from pydantic import Field

from aftersales.routing.api import build_router
from aftersales.routing.clocks import TIMER_KIND
from aftersales.routing.consumers import make_ticket_handler
from aftersales.routing.lifecycle import Lifecycle
from aftersales.routing.router import Router
from aftersales.routing.store import INDEXES, OUTBOX_COLLECTIONS
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.kafka import subscribe
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime, periodic
from aftersales.shared.settings import ServiceSettings

log = logging.getLogger("aftersales.routing")


class Settings(ServiceSettings):
    service_name: str = "routing"
    http_port: int = 8002
    housekeeping_interval_s: float = Field(
        default=5.0, gt=0, description="how often gauges are refreshed and queues swept"
    )
    slot_reconcile_interval_s: float = Field(
        default=120.0, gt=0, description="how often held capacity slots are checked against work orders"
    )
    slot_grace_s: float = Field(
        default=60.0, gt=0, description="a slot younger than this is never released by the reconciler"
    )


def build(settings: Settings) -> FastAPI:
    """Construct the routing app (connects to nothing until its lifespan starts)."""

    async def housekeeping() -> None:
        await router.refresh_gauges()
        await router.sweep_queues()

    async def reconcile() -> None:
        await router.reap_slots(grace_s=settings.slot_grace_s)

    spec = RuntimeSpec(
        consumes=[Topic.TICKETS],
        produces=[Topic.ASSIGNMENTS],
        outbox_collections=OUTBOX_COLLECTIONS,
        indexes=INDEXES,
        extra_tasks=[
            periodic(
                housekeeping, settings.housekeeping_interval_s, what="housekeeping pass", wait_first=True
            ),
            periodic(
                reconcile, settings.slot_reconcile_interval_s, what="slot reconciliation", wait_first=True
            ),
        ],
    )
    runtime = ServiceRuntime(settings, spec)
    router = Router(runtime)
    lifecycle = Lifecycle(router)
    runtime.on_timer(TIMER_KIND, lifecycle.on_timer)
    subscribe(runtime.broker, settings, [Topic.TICKETS], make_ticket_handler(router, lifecycle))
    return create_app(
        runtime,
        title="aftersales routing",
        description=(
            "Service grids, technicians, assignment with capacity, surge mode, SLA clocks in business hours "
            "and escalation. Publishes aftersales.assignments.v1."
        ),
        routers=[build_router(router, lifecycle)],
    )
