"""Intake's Kafka subscriptions (two consumer groups): gateways' requests become tickets; the assignment,
follow-up and feedback streams go on the tickets' timelines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aftersales.intake import metrics
from aftersales.intake.search_service import TicketSearch
from aftersales.intake.service import Intake, TicketProgress
from aftersales.shared.contracts import REGISTRY, Topic
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.requests import CustomerReplyRequest, TicketRequest
from aftersales.shared.envelope import CloudEvent, PoisonEvent
from aftersales.shared.errors import DomainError
from aftersales.shared.kafka import CURRENT_DELIVERY, Delivery, PerEvent, subscribe
from aftersales.shared.routes import EventRoutes
from aftersales.shared.runtime import ServiceRuntime

REQUEST_TYPE = "aftersales.request.submitted.v1"
REPLY_TYPE = "aftersales.request.customer-replied.v1"  # a customer's reply on a ticket's thread (mail)
READ_MODEL_TOPICS = (Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK)
CONSUMES = (Topic.REQUESTS, *READ_MODEL_TOPICS, Topic.TICKETS)


def register(
    runtime: ServiceRuntime,
    intake: Intake,
    progress: TicketProgress,
    search: TicketSearch,
    retention: StreamFollower,
    *,
    requests_batch: int | None = None,
) -> None:
    """Subscribe intake's handlers: requests (one by one, or a whole batch at once), every event
    type of the read-model streams to the ticket timeline, and intake's own ticket stream to the search
    index and the retention schedule (a group of their own, so neither holds tickets or timelines back)."""
    settings = runtime.settings
    requests = Requests(
        intake,
        progress,
        concurrency=settings.consumer_concurrency,
        most_others=settings.consumer_batch_max_records,
    )
    subscribe(
        runtime.broker,
        settings,
        [Topic.REQUESTS],
        requests.on_request,
        group_id=f"aftersales-{settings.service_name}-requests",
        ignore_unknown_types=False,
        batch_handler=requests.on_requests,
        max_records=requests_batch,
    )
    timeline = EventRoutes(
        {
            spec.model: progress.on_downstream_event
            for spec in REGISTRY.values()
            if spec.topic in READ_MODEL_TOPICS
        }
    )
    subscribe(
        runtime.broker,
        settings,
        list(READ_MODEL_TOPICS),
        timeline,
        group_id=f"aftersales-{settings.service_name}-readmodel",
    )
    own = OwnStream(search, retention)
    subscribe(
        runtime.broker,
        settings,
        [Topic.TICKETS, Topic.ASSIGNMENTS],
        own.on_event,
        group_id=f"aftersales-{settings.service_name}-ownstream",
        batch_handler=own.on_events,
    )


class StreamFollower(Protocol):
    async def on_ticket_event(self, event: CloudEvent) -> None: ...

    async def on_ticket_events(self, deliveries: Sequence[Delivery]) -> None: ...


class OwnStream:
    """Intake's own ticket stream (with routing's resolutions) read back in one consumer group, in
    batches: the search index and the retention schedule follow it. Both are idempotent, so a batch
    retried after one of them failed costs a repeat, never a double effect."""

    def __init__(self, *followers: StreamFollower) -> None:
        self.followers = followers

    async def on_event(self, event: CloudEvent) -> None:
        for follower in self.followers:
            await follower.on_ticket_event(event)

    async def on_events(self, deliveries: Sequence[Delivery]) -> None:
        for follower in self.followers:
            await follower.on_ticket_events(deliveries)


class Requests:
    """The requests topic: `request.submitted` and `request.customer-replied` belong there (any other
    type is parked). IoT alerts carry their record's position, which tells a redelivery apart from a
    replayed request."""

    def __init__(
        self, intake: Intake, progress: TicketProgress, *, concurrency: int, most_others: int
    ) -> None:
        self.intake = intake
        self.progress = progress
        self.concurrency = concurrency
        self.most_others = most_others  # requests other than alerts one whole-batch call takes on

    async def on_request(self, event: CloudEvent) -> None:
        await self._submit(event, CURRENT_DELIVERY.get())

    async def on_requests(self, deliveries: Sequence[Delivery]) -> None:
        """A whole batch: alerts fold storm by storm (one write per storm), other requests in parallel.
        Any refusal sends the batch through `on_request` one by one, so only that request is parked."""
        alerts = []
        others = []
        for d in deliveries:
            if d.event.type == REPLY_TYPE:
                others.append(d)
                continue
            request = _request_of(d.event)
            if request.channel is Channel.IOT:
                alerts.append(
                    self.intake.alert(
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
        if len(others) > self.most_others:
            # each is its own write however they come: one by one, each has its own timeout and the
            # batch its partial progress (a large batch is meant for alerts, which fold per storm)
            raise PerEvent(f"{len(others)} requests other than IoT alerts in one batch")
        gate = asyncio.Semaphore(self.concurrency)

        async def one(d: Delivery) -> None:
            async with gate:
                await self._submit(d.event, d)

        try:
            await asyncio.gather(self.intake.absorb_alerts(alerts), *(one(d) for d in others))
        except DomainError as exc:
            raise PoisonEvent(f"request refused: {exc.message}") from None

    async def _submit(self, event: CloudEvent, position: Delivery | None) -> None:
        if event.type == REPLY_TYPE:
            await self._reply(event)
            return
        request = _request_of(event)
        caller, key = f"kafka:{event.source}", request.idempotency_key or event.id
        try:
            if request.channel is Channel.IOT:  # the record's position tells its redelivery apart
                alert = self.intake.alert(
                    request,
                    caller=caller,
                    idempotency_key=key,
                    source="kafka",
                    partition=position.partition if position else None,
                    offset=position.offset if position else None,
                )
                await self.intake.absorb_alerts([alert])
            else:
                await self.intake.submit(request, caller=caller, idempotency_key=key, source="kafka")
        except DomainError as exc:  # e.g. an idempotency key reused for a different request
            metrics.REQUESTS_REJECTED.labels("kafka", "refused").inc()
            raise PoisonEvent(f"request refused: {exc.message}") from None
        # RetryLater (a lost race that kept losing) passes: the consumer runtime backs off and retries

    async def _reply(self, event: CloudEvent) -> None:
        """Apply a customer's reply to its ticket; an unknown ticket, or a sender who is not the ticket's
        customer, is refused (parked with the reason)."""
        reply = event.model()
        assert isinstance(reply, CustomerReplyRequest)
        try:
            await self.progress.customer_wrote(
                reply,
                caller=f"kafka:{event.source}",
                customer_id_key=self.intake.customer_id_key,
            )
        except DomainError as exc:
            metrics.REQUESTS_REJECTED.labels("kafka", "refused").inc()
            raise PoisonEvent(f"reply refused: {exc.message}") from None


def _request_of(event: CloudEvent) -> TicketRequest:
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
