"""Fieldwork service wiring: settings, the runtime, the stores and use cases, consumers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from pydantic import Field
from starlette.middleware import Middleware
from starlette.types import Receive, Scope, Send

from aftersales.fieldwork import api, api_reports, consumers
from aftersales.fieldwork.hours_store import HoursStore
from aftersales.fieldwork.privacy import PersonalData
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
from aftersales.shared.http import BodySizeLimit, create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "fieldwork"
    http_port: int = Field(default=8007, ge=1, le=65535)
    report_photo_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=50 * 1024 * 1024, description="largest photo uploaded"
    )


PHOTO_UPLOAD = re.compile(r"^/v1/reports/[^/]+/photos/?$")


class PhotoAwareBodyLimit(BodySizeLimit):
    """The shared body limit, except for photo uploads: their route reads the body itself, bounded by
    `report_photo_max_bytes`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and PHOTO_UPLOAD.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _photo_aware(app: FastAPI) -> None:
    """Swap the shared body limit for the photo-aware one (the middleware stack is built at start)."""
    app.user_middleware[:] = [
        Middleware(PhotoAwareBodyLimit) if getattr(m, "cls", None) is BodySizeLimit else m
        for m in app.user_middleware
    ]


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
    report_book = ReportBook(
        report_store, fieldwork, stockroom, PhotoStore(runtime), settings.report_photo_max_bytes
    )
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
    _photo_aware(app)
    app.state.fieldwork = fieldwork
    app.state.reports = report_book
    app.state.stockroom = stockroom
    return app
