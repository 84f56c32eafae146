"""Intake wiring: settings, runtime (MongoDB, Kafka, outbox relay), consumers and the HTTP app."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import Field

from aftersales.intake import api, consumers, store
from aftersales.intake.readmodel import ReadModel
from aftersales.intake.rules import RULES, validate_rules
from aftersales.intake.service import Intake
from aftersales.shared.contracts import Topic
from aftersales.shared.http import create_app
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


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


def build(settings: Settings) -> FastAPI:
    """Construct (without connecting) the intake service's app."""
    validate_rules(RULES)
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=[Topic.REQUESTS, *consumers.READ_MODEL_TOPICS],
            produces=[Topic.TICKETS],
            outbox_collections=[store.TICKETS],
            indexes=store.INDEXES,
        ),
    )
    tickets = store.TicketStore(runtime)
    intake = Intake(tickets, storm_window_s=settings.storm_window_s)
    consumers.register(runtime.broker, settings, intake, ReadModel(tickets))
    return create_app(
        runtime,
        title="aftersales intake",
        description="Customer requests from every channel become tickets; the system of record for tickets "
        "and customers, with each ticket's status and timeline.",
        routers=[api.router(intake)],
    )
