"""Intake wiring: settings, runtime (MongoDB, Kafka, outbox relay), consumers and the HTTP app."""

from __future__ import annotations

from typing import Self

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from aftersales.intake import api, attachments_api, consumers, customers_api, desk_api, search_api, store
from aftersales.intake import export as export_api
from aftersales.intake import privacy as privacy_api
from aftersales.intake.attachment_service import TicketFiles
from aftersales.intake.attachments_store import ATTACHMENTS, AttachmentStore
from aftersales.intake.customer_book import CustomerBook
from aftersales.intake.desk_service import TicketDesk
from aftersales.intake.privacy import Privacy
from aftersales.intake.privacy_store import ERASURE_REQUESTS, PREFERENCES, PrivacyStore
from aftersales.intake.retention import IntakeRetention
from aftersales.intake.rules import RULES, validate_rules
from aftersales.intake.search_service import TicketSearch
from aftersales.intake.service import Intake, TicketProgress
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import PERSONAL_DATA_HOLDERS
from aftersales.shared.http import RouteBodyLimit, allow_larger_body, create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings

DEV_CUSTOMER_ID_KEY = "dev-customer-id-key-do-not-use-in-production"
MIN_KEY_CHARS = 32
OUTBOX_COLLECTIONS = [
    store.TICKETS,
    ERASURE_REQUESTS,
    PREFERENCES,
    ERASURES,
    *export_api.OUTBOX_COLLECTIONS,
    ATTACHMENTS,
]


class Settings(ServiceSettings):
    service_name: str = "intake"
    http_port: int = Field(default=8001, ge=1, le=65535)
    storm_window_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 24 * 3600,
        description="IoT alerts of one device and fault within this many seconds of the last one "
        "join its open ticket",
    )
    requests_batch_max_records: int = Field(
        default=5000,
        ge=1,
        le=20_000,
        description="requests (IoT alerts above all) intake takes from Kafka per batch: a storm's alerts "
        "in one batch fold into one write, so larger batches mean fewer writes per alert in an alarm storm",
    )
    customer_id_key: SecretStr = Field(
        default=SecretStr(DEV_CUSTOMER_ID_KEY),
        description="HMAC-SHA256 key that derives customer ids from phone numbers and e-mail addresses "
        "(at least 32 characters; the dev default is refused outside development). Changing it changes "
        "every derived id: see the README's migration note",
    )
    standard_warranty_months: int = Field(
        default=24,
        ge=0,
        le=240,
        description="warranty period the platform grants; a channel's own warranty_months is not trusted",
    )
    attachment_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=100 * 1024 * 1024,
        description="largest file attached to a ticket (photo, invoice or document), in bytes",
    )
    attachments_per_ticket: int = Field(
        default=50, ge=1, le=200, description="most files attached to one ticket (409 beyond)"
    )
    erasure_confirming_services: list[str] = Field(
        default_factory=lambda: list(PERSONAL_DATA_HOLDERS),
        description="services whose confirmation completes an erasure request (JSON list)",
    )
    export_answering_services: list[str] = Field(
        default_factory=lambda: list(PERSONAL_DATA_HOLDERS),
        description="services whose answers complete a data export (JSON list)",
    )
    export_ttl_days: float = Field(
        default=7,
        gt=0,
        le=90,
        description="an export's private key and its sealed answers are deleted this many days after the "
        "request",
    )
    retention_customer_contact_days: float = Field(
        default=1095,
        ge=0,
        description="a customer's contact data (name, phone, e-mail, address) is pseudonymised this many "
        "days after the customer's last ticket or edit (0: kept without limit)",
    )
    retention_ticket_text_days: float = Field(
        default=1095,
        ge=0,
        description="what a customer wrote on a ticket (title, description) is pseudonymised this many "
        "days after the ticket last changed (0: kept without limit)",
    )

    @model_validator(mode="after")
    def _refuse_unsafe_customer_key(self) -> Self:
        if self.environment != "development":
            key = self.customer_id_key.get_secret_value()
            if key == DEV_CUSTOMER_ID_KEY:
                raise ValueError(
                    f"the development customer id key is not allowed in {self.environment}: "
                    "set CUSTOMER_ID_KEY"
                )
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"CUSTOMER_ID_KEY must be at least {MIN_KEY_CHARS} characters")
        return self


def build(settings: Settings) -> FastAPI:
    """Construct (without connecting) the intake service's app."""
    validate_rules(RULES)
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=list(consumers.CONSUMES),
            produces=[Topic.TICKETS, Topic.PRIVACY],
            outbox_collections=OUTBOX_COLLECTIONS,
            indexes=store.INDEXES,
        ),
    )
    tickets = store.TicketStore(runtime)
    intake = Intake(
        tickets,
        storm_window_s=settings.storm_window_s,
        customer_id_key=settings.customer_id_key.get_secret_value().encode(),
        standard_warranty_months=settings.standard_warranty_months,
    )
    progress = TicketProgress(tickets)
    search = TicketSearch(runtime.db, key=intake.customer_id_key)
    privacy_store = PrivacyStore(runtime)
    retention = IntakeRetention(runtime, privacy_store, tickets.customers, settings)
    consumers.register(
        runtime, intake, progress, search, retention, requests_batch=settings.requests_batch_max_records
    )
    files = _ticket_files(runtime, tickets, settings)
    privacy = Privacy(
        privacy_store,
        ErasureLedger(runtime, service="intake"),
        expected=tuple(settings.erasure_confirming_services),
        attachments=files,
    )
    privacy_api.register(runtime, privacy)
    exports = export_api.wire(runtime, tickets, privacy_store, settings)
    app = create_app(
        runtime,
        title="aftersales intake",
        description="Customer requests from every channel become tickets; the system of record for tickets "
        "and customers, with each ticket's status, timeline and conversation.",
        routers=[
            api.tickets,
            desk_api.router,
            customers_api.router,
            api.customers,
            privacy_api.router,
            export_api.router,
            attachments_api.router,
            search_api.router,
        ],
    )
    _mount_files(app, files, settings)
    app.state.intake, app.state.progress, app.state.search = intake, progress, search
    app.state.privacy, app.state.exports = privacy, exports
    app.state.retention = retention
    app.state.desk = TicketDesk(tickets)
    app.state.customer_book = CustomerBook(tickets.customers, customer_id_key=intake.customer_id_key)
    return app


def _ticket_files(runtime: ServiceRuntime, tickets: store.TicketStore, settings: Settings) -> TicketFiles:
    limits = {"max_bytes": settings.attachment_max_bytes, "per_ticket": settings.attachments_per_ticket}
    return TicketFiles(AttachmentStore(runtime), tickets, **limits)


def _mount_files(app: FastAPI, files: TicketFiles, settings: Settings) -> None:
    """Hand the attachment routes their use cases; their uploads stream past the shared body limit."""
    upload = RouteBodyLimit("POST", attachments_api.UPLOAD_PATH, settings.attachment_max_bytes, "file")
    allow_larger_body(app, upload)
    app.state.attachments = files
