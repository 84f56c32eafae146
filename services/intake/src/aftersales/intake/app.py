"""Intake wiring: settings, runtime (MongoDB, Kafka, outbox relay), consumers and the HTTP app."""

from __future__ import annotations

from typing import Self

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from aftersales.intake import api, consumers, customers_api, desk_api, store
from aftersales.intake import privacy as privacy_api
from aftersales.intake.customer_book import CustomerBook
from aftersales.intake.desk_service import TicketDesk
from aftersales.intake.privacy import Privacy
from aftersales.intake.privacy_store import ERASURE_REQUESTS, PREFERENCES, PrivacyStore
from aftersales.intake.rules import RULES, validate_rules
from aftersales.intake.service import Intake, TicketProgress
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import PERSONAL_DATA_HOLDERS
from aftersales.shared.http import create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings

DEV_CUSTOMER_ID_KEY = "dev-customer-id-key-do-not-use-in-production"
MIN_KEY_CHARS = 32


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
    erasure_confirming_services: list[str] = Field(
        default_factory=lambda: list(PERSONAL_DATA_HOLDERS),
        description="services whose confirmation completes an erasure request (JSON list)",
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
    """Construct (without connecting) the intake service's app. Intake has no timers."""
    validate_rules(RULES)
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=list(consumers.CONSUMES),
            produces=[Topic.TICKETS, Topic.PRIVACY],
            outbox_collections=[store.TICKETS, ERASURE_REQUESTS, PREFERENCES, ERASURES],
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
    consumers.register(runtime, intake, progress)
    privacy = Privacy(
        PrivacyStore(runtime),
        ErasureLedger(runtime, service="intake"),
        expected=tuple(settings.erasure_confirming_services),
    )
    privacy_api.register(runtime, privacy)
    app = create_app(
        runtime,
        title="aftersales intake",
        description="Customer requests from every channel become tickets; the system of record for tickets "
        "and customers, with each ticket's status, timeline and conversation.",
        routers=[api.tickets, desk_api.router, customers_api.router, api.customers, privacy_api.router],
    )
    app.state.intake, app.state.progress = intake, progress
    app.state.privacy = privacy
    app.state.desk = TicketDesk(tickets)
    app.state.customer_book = CustomerBook(tickets.customers, customer_id_key=intake.customer_id_key)
    return app
