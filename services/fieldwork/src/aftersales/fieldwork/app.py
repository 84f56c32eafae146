"""Fieldwork service wiring: settings, the runtime, the stores and use cases, consumers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from aftersales.fieldwork import api, api_reports, consumers
from aftersales.fieldwork.hours_store import HoursStore
from aftersales.fieldwork.privacy import PersonalData
from aftersales.fieldwork.service import Fieldwork, ReportBook, Stockroom
from aftersales.fieldwork.store import (
    INDEXES,
    OUTBOX_COLLECTIONS,
    AppointmentStore,
    ReportStore,
    StockStore,
    WorkOrderStore,
)
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "fieldwork"
    http_port: int = Field(default=8007, ge=1, le=65535)


def build(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.FIELDWORK, Topic.PRIVACY],
            outbox_collections=[*OUTBOX_COLLECTIONS, ERASURES],
            indexes=INDEXES,
        ),
    )
    appointments, report_store = AppointmentStore(runtime), ReportStore(runtime)
    fieldwork = Fieldwork(
        work_orders=WorkOrderStore(runtime), appointments=appointments, hours=HoursStore(runtime)
    )
    stockroom = Stockroom(StockStore(runtime))
    report_book = ReportBook(report_store, fieldwork, stockroom)
    personal_data = PersonalData(
        appointments=appointments, reports=report_store, ledger=ErasureLedger(runtime, service="fieldwork")
    )
    consumers.register(runtime, fieldwork, personal_data)
    app = create_app(
        runtime,
        title="aftersales fieldwork",
        description="On-site work: appointments and a technician's day, check-in and check-out, service "
        "reports (服务报告) signed by the customer and locked by their SHA-256, and spare-part stock (备件).",
        routers=[
            api.work_orders,
            api.appointments,
            api.technicians,
            api_reports.reports_router,
            api_reports.stock_router,
        ],
    )
    app.state.fieldwork = fieldwork
    app.state.reports = report_book
    app.state.stockroom = stockroom
    return app
