"""Intake's Kafka handlers: gateways' requests become tickets; downstream events feed the read model."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from faststream.kafka import KafkaBroker

from aftersales.intake import metrics
from aftersales.intake.readmodel import ReadModel
from aftersales.intake.service import Intake
from aftersales.intake.store import ContentionError
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.envelope import CloudEvent, PoisonEvent
from aftersales.shared.errors import DomainError
from aftersales.shared.kafka import CURRENT_DELIVERY, Delivery, subscribe
from aftersales.shared.settings import ServiceSettings

REQUEST_TYPE = "aftersales.request.submitted.v1"
READ_MODEL_TOPICS = (Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK)


def register(broker: KafkaBroker, settings: ServiceSettings, intake: Intake, read_model: ReadModel) -> None:
    """Subscribe intake's handlers (two consumer groups: requests, and the read-model streams)."""

    def request_of(event: CloudEvent) -> TicketRequest:
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
        return request

    async def submit(event: CloudEvent, position: Delivery | None) -> None:
        request = request_of(event)
        caller, key = f"kafka:{event.source}", request.idempotency_key or event.id
        try:
            if request.channel is Channel.IOT:  # the record's position tells its redelivery apart
                alert = intake.alert(
                    request,
                    caller=caller,
                    idempotency_key=key,
                    source="kafka",
                    partition=position.partition if position else None,
                    offset=position.offset if position else None,
                )
                await intake.absorb_alerts([alert])
            else:
                await intake.submit(request, caller=caller, idempotency_key=key, source="kafka")
        except ContentionError:
            raise  # transient: the consumer runtime retries it
        except DomainError as exc:  # e.g. an idempotency key reused for a different request
            metrics.REQUESTS_REJECTED.labels("kafka", "refused").inc()
            raise PoisonEvent(f"request refused: {exc.message}") from None

    async def on_request(event: CloudEvent) -> None:
        await submit(event, CURRENT_DELIVERY.get())

    async def on_requests(deliveries: Sequence[Delivery]) -> None:
        """A whole batch: alerts fold storm by storm (one write per storm), other requests in parallel.
        Any refusal sends the batch through `on_request` one by one, so only that request is parked."""
        alerts = []
        others = []
        for d in deliveries:
            request = request_of(d.event)
            if request.channel is Channel.IOT:
                alerts.append(
                    intake.alert(
                        request,
                        caller=f"kafka:{d.event.source}",
                        idempotency_key=request.idempotency_key or d.event.id,
                        source="kafka",
                        partition=d.partition,
                        offset=d.offset,
                    )
                )
            else:
                others.append(d)
        gate = asyncio.Semaphore(settings.consumer_concurrency)

        async def one(d: Delivery) -> None:
            async with gate:
                await submit(d.event, d)

        try:
            await asyncio.gather(intake.absorb_alerts(alerts), *(one(d) for d in others))
        except DomainError as exc:
            raise PoisonEvent(f"request refused: {exc.message}") from None

    subscribe(
        broker,
        settings,
        [Topic.REQUESTS],
        on_request,
        group_id=f"aftersales-{settings.service_name}-requests",
        ignore_unknown_types=False,
        batch_handler=on_requests,
    )
    subscribe(
        broker,
        settings,
        list(READ_MODEL_TOPICS),
        read_model.apply,
        group_id=f"aftersales-{settings.service_name}-readmodel",
    )
