"""Fieldwork service wiring: settings, the runtime, the stores and use cases, consumers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from aftersales.fieldwork import api, api_reports, consumers
from aftersales.fieldwork.export import FieldworkExport
from aftersales.fieldwork.hours_store import HoursStore
from aftersales.fieldwork.privacy import PersonalData
from aftersales.fieldwork.retention import FieldworkRetention
from aftersales.fieldwork.service import Fieldwork, ReportBook, Stockroom
from aftersales.fieldwork.store import (
    INDEXES,
    OUTBOX_COLLECTIONS,
    AppointmentStore,
    PhotoStore,
    ReportStore,
    StockStore,
    WorkOrderStore,
)
from aftersales.shared.contracts import Topic
from aftersales.shared.export import EXPORT_ANSWERS, ExportLedger
from aftersales.shared.http import RouteBodyLimit, allow_larger_body, create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "fieldwork"
    http_port: int = Field(default=8007, ge=1, le=65535)
    report_photo_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024, description="largest photo uploaded"
    )
    retention_appointment_points_days: float = Field(
        default=1095,
        ge=0,
        description="where the customer was met (check-in/out points) and the work notes are removed "
        "this many days after the appointment last changed (0: kept without limit)",
    )
    retention_report_signature_days: float = Field(
        default=1095,
        ge=0,
        description="the customer's signature and the signer's name are removed from a service report "
        "this many days after it last changed (0: kept without limit)",
    )
    retention_report_photos_days: float = Field(
        default=1095,
        ge=0,
        description="the photos uploaded to a service report are deleted this many days after it last "
        "changed (0: kept without limit)",
    )


def build(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.FIELDWORK, Topic.PRIVACY],
            outbox_collections=[*OUTBOX_COLLECTIONS, ERASURES, EXPORT_ANSWERS],
            indexes=INDEXES,
        ),
    )
    appointments, report_store = AppointmentStore(runtime), ReportStore(runtime)
    fieldwork = Fieldwork(
        work_orders=WorkOrderStore(runtime), appointments=appointments, hours=HoursStore(runtime)
    )
    stockroom = Stockroom(StockStore(runtime))
    photos = PhotoStore(runtime)
    report_book = ReportBook(report_store, fieldwork, stockroom, photos, settings.report_photo_max_bytes)
    personal_data = PersonalData(
        appointments=appointments,
        reports=report_store,
        photos=photos,
        ledger=ErasureLedger(runtime, service="fieldwork"),
    )
    retention = FieldworkRetention(
        runtime,
        appointments=appointments,
        reports=report_store,
        personal_data=personal_data,
        settings=settings,
    )
    appointments.noted = report_store.noted = retention.noted
    export = FieldworkExport(
        appointments=appointments, reports=report_store, ledger=ExportLedger(runtime, service="fieldwork")
    )
    consumers.register(runtime, fieldwork, personal_data, export.on_export_requested)
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
    # A photo upload streams into the store, bounded there by the same limit (413 naming `photo`).
    upload = "/v1/reports/{report_id}/photos"
    allow_larger_body(app, RouteBodyLimit("POST", upload, settings.report_photo_max_bytes, "photo"))
    app.state.fieldwork = fieldwork
    app.state.reports = report_book
    app.state.stockroom = stockroom
    app.state.retention = retention
    return app
