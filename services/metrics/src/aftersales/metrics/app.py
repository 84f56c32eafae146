"""Metrics service wiring: settings, the runtime, consumers, timers, the exporter and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import FastAPI
from pydantic import Field

from aftersales.metrics import api, consumers, exporter, metrics, timers
from aftersales.metrics.inspection import Targets
from aftersales.metrics.service import Recording, Reporting
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
        consumes=[t.value for t in consumers.CONSUMES],
        produces=[Topic.REPORTS.value],
        outbox_collections=[REPORTS],
        indexes=INDEXES,
    )
    runtime = ServiceRuntime(settings, spec)
    store = MetricsStore(runtime.db)
    recording = Recording(store, zone, settings.kpi_product_models)
    reporting = Reporting(store, zone, settings.targets(), runtime.timers, runtime.relay.wake)
    metrics.register()

    async def refresh_snapshot() -> None:
        await exporter.refresh_snapshot(recording, settings)

    spec.extra_tasks.append(
        periodic(refresh_snapshot, settings.snapshot_interval_s, what="KPI snapshot refresh")
    )
    consumers.register(runtime, recording)
    timers.register(runtime, reporting, publish_reports=settings.publish_reports)
    app = create_app(
        runtime,
        title="aftersales metrics",
        description="KPIs from every stream, technician performance, inspection reports (巡检)",
        routers=[api.router],
    )
    app.state.reporting = reporting
    return app
