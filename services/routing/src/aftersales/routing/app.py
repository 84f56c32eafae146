"""Wiring of the routing service: settings, runtime (MongoDB, Kafka, outbox, SLA timers), HTTP app."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from aftersales.routing import api, consumers, timers
from aftersales.routing.service import RoutingService
from aftersales.routing.store import INDEXES, OUTBOX_COLLECTIONS, RoutingStore
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime, periodic
from aftersales.shared.settings import ServiceSettings


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
        default=60.0,
        gt=0,
        description="a slot the reconciler finds held by no open work order is released once it has been "
        "so for this long (a dispatch may still be writing its work order)",
    )
    technician_silent_after_s: float = Field(
        default=900.0,
        gt=0,
        description="a technician whose mobile client sent heartbeats and then none for this long gets no "
        "new work and is flagged to the grid supervisor (one who never sent one is never silent)",
    )
    unrouted_supervisor_id: str = Field(
        default="unrouted-desk",
        min_length=1,
        max_length=64,
        description="the supervisor an SLA breach escalates to when no grid supervises the work order (a "
        "region no grid covers yet, or a grid without a supervisor_id); never nobody",
    )


def build(settings: Settings) -> FastAPI:
    """Construct the routing app (connects to nothing until its lifespan starts)."""

    async def housekeeping() -> None:
        await routing.housekeeping()

    async def reconcile() -> None:
        await routing.reap_slots(grace_s=settings.slot_grace_s)

    spec = RuntimeSpec(
        consumes=list(consumers.CONSUMES),
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
    routing = RoutingService(
        RoutingStore(runtime.db, runtime.relay.notify),
        runtime.timers,
        silent_after_s=settings.technician_silent_after_s,
        unrouted_supervisor_id=settings.unrouted_supervisor_id,
    )
    # Another process gone, or a write of this one unconfirmed: a slot may be left between two writes.
    runtime.relay.on_peer_change(routing.slot_audit.request_full)
    consumers.register(runtime, routing)
    timers.register(runtime, routing)
    app = create_app(
        runtime,
        title="aftersales routing",
        description=(
            "Service grids, technicians, assignment with capacity, surge mode, SLA clocks in business hours "
            "and escalation. Publishes aftersales.assignments.v1."
        ),
        routers=list(api.ROUTERS),
    )
    app.state.routing = routing
    return app
