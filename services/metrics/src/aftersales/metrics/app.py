"""Wiring of the metrics service: settings, runtime, consumers, exporter, routes (connects to nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from pydantic import Field

from aftersales.metrics import api, consumers, exporter
from aftersales.metrics.inspection import Targets
from aftersales.metrics.reporting import TIMER_KIND, Reporting
from aftersales.metrics.store import INDEXES, REPORTS, MetricsStore
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime, periodic
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.zones import IanaZone


class Settings(ServiceSettings):
    service_name: str = "metrics"
    http_port: int = Field(default=8005, ge=1, le=65535)
    kpi_timezone: IanaZone = Field(
        default="UTC", description="calendar days, weeks and months are cut in this zone"
    )
    snapshot_interval_s: float = Field(default=10.0, gt=0, description="Prometheus snapshot refresh period")
    target_sla_response_compliance: float = Field(default=0.9, ge=0, le=1)
    target_sla_resolution_compliance: float = Field(default=0.9, ge=0, le=1)
    target_csat_average: float = Field(default=4.0, ge=1, le=5)
    target_first_contact_resolution_rate: float = Field(default=0.7, ge=0, le=1)
    technician_capacity_tickets: int = Field(
        default=8, ge=1, description="open tickets above this are flagged"
    )
    rising_min_tickets: int = Field(default=3, ge=1)
    rising_growth: float = Field(default=0.5, gt=0)
    publish_reports: bool = Field(default=True, description="publish weekly and monthly inspection reports")
    kpi_product_models: frozenset[str] = Field(
        default=frozenset(),
        description="product models (or device types) the product KPIs are broken down by (JSON list); "
        "every other value counts as 'other', so channels cannot grow the rollups without bound",
    )

    def targets(self) -> Targets:
        return Targets(
            sla_response_compliance=self.target_sla_response_compliance,
            sla_resolution_compliance=self.target_sla_resolution_compliance,
            csat_average=self.target_csat_average,
            first_contact_resolution_rate=self.target_first_contact_resolution_rate,
            technician_capacity_tickets=self.technician_capacity_tickets,
            rising_min_tickets=self.rising_min_tickets,
            rising_growth=self.rising_growth,
        )


def build(settings: Settings) -> FastAPI:
    zone = ZoneInfo(settings.kpi_timezone)
    spec = RuntimeSpec(
        consumes=[t.value for t in consumers.CONSUMED],
        produces=[Topic.REPORTS.value],
        outbox_collections=[REPORTS],
        indexes=INDEXES,
    )
    runtime = ServiceRuntime(settings, spec)
    store = MetricsStore(runtime.db, zone)
    reporting = Reporting(store, zone, settings.targets(), runtime.timers, runtime.relay.wake)
    runtime.on_timer(TIMER_KIND, reporting.on_timer)
    exporter.register()

    async def refresh_snapshot() -> None:
        await exporter.refresh_snapshot(store, settings)

    background = periodic(refresh_snapshot, settings.snapshot_interval_s, what="KPI snapshot refresh")

    async def schedule(stop: asyncio.Event) -> None:
        if settings.publish_reports:
            await reporting.schedule_next()

    tasks: list[Callable[[asyncio.Event], Awaitable[None]]] = [background, schedule]
    spec.extra_tasks.extend(tasks)
    consumers.register(runtime, store, settings.kpi_product_models)
    return create_app(
        runtime,
        title="aftersales metrics",
        description="KPIs from every stream, technician performance, inspection reports (巡检)",
        routers=[api.router(reporting)],
    )
