"""Intake's Kafka handlers: gateways' requests become tickets; downstream events feed the read model."""

from __future__ import annotations

from faststream.kafka import KafkaBroker

from aftersales.intake import metrics
from aftersales.intake.readmodel import ReadModel
from aftersales.intake.service import Intake
from aftersales.intake.store import ContentionError
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.envelope import CloudEvent, PoisonEvent
from aftersales.shared.errors import DomainError
from aftersales.shared.kafka import subscribe
from aftersales.shared.settings import ServiceSettings

REQUEST_TYPE = "aftersales.request.submitted.v1"
READ_MODEL_TOPICS = (Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK)


def register(broker: KafkaBroker, settings: ServiceSettings, intake: Intake, read_model: ReadModel) -> None:
    """Subscribe intake's handlers (two consumer groups: requests, and the read-model streams)."""

    async def on_request(event: CloudEvent) -> None:
        if event.type != REQUEST_TYPE:
            metrics.REQUESTS_REJECTED.labels("kafka", "unexpected_type").inc()
            raise PoisonEvent(
                f"unexpected event type {event.type!r} on the requests topic; expected {REQUEST_TYPE}"
            )
        try:
            request = event.model()
        except PoisonEvent:
            metrics.REQUESTS_REJECTED.labels("kafka", "invalid").inc()
            raise
        assert isinstance(request, TicketRequest)
        try:
            await intake.submit(
                request,
                caller=f"kafka:{event.source}",
                idempotency_key=request.idempotency_key or event.id,
                source="kafka",
            )
        except ContentionError:
            raise  # transient: the reliable consumer retries it
        except DomainError as exc:  # e.g. an idempotency key reused for a different request
            metrics.REQUESTS_REJECTED.labels("kafka", "refused").inc()
            raise PoisonEvent(f"request refused: {exc.message}") from None

    subscribe(
        broker,
        settings,
        [Topic.REQUESTS],
        on_request,
        group_id=f"aftersales-{settings.service_name}-requests",
        ignore_unknown_types=False,
    )
    subscribe(
        broker,
        settings,
        list(READ_MODEL_TOPICS),
        read_model.apply,
        group_id=f"aftersales-{settings.service_name}-readmodel",
    )
