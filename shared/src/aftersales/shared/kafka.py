"""Kafka wiring on FastStream's KafkaBroker: safe producers, topic set-up, and the reliable consumer.

The reliable consumer commits an offset only after the handler succeeded (or the message was parked in
the DLQ), retries a bounded number of times with exponential backoff, then publishes the message to
`<topic>.dlq` with the reason in headers and moves on. FastStream's ack policies alone do not give this:
`ACK` commits a failed message, `NACK_ON_ERROR` redelivers it forever. So the subscriber runs with
`NACK_ON_ERROR` (an offset is never committed past a message that was neither handled nor parked) and
this module does the bounded retry and the dead-lettering itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry import context as otel_context
from opentelemetry.propagate import extract
from prometheus_client import REGISTRY, Counter

from aftersales.shared.contracts import dead_letter_topic
from aftersales.shared.envelope import CloudEvent, PoisonEvent, decode_headers, from_kafka
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.telemetry import tracer_provider

log = logging.getLogger("aftersales.kafka")

EventHandler = Callable[[CloudEvent], Awaitable[None]]

DLQ_MESSAGES = Counter(
    "aftersales_dlq_messages_total",
    "Messages parked in a dead-letter topic, by source topic and reason kind",
    ["topic", "reason"],
)
CONSUMER_RETRIES = Counter(
    "aftersales_consumer_retries_total", "Handler attempts that failed and were retried", ["topic"]
)
EVENTS_HANDLED = Counter(
    "aftersales_events_handled_total", "Events handled successfully, by topic and type", ["topic", "type"]
)


def make_broker(settings: ServiceSettings) -> KafkaBroker:
    """Return a broker whose producer waits for all in-sync replicas and is idempotent."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=f"aftersales-{settings.service_name}",
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
        middlewares=(
            KafkaTelemetryMiddleware(tracer_provider=tracer_provider()),
            KafkaPrometheusMiddleware(registry=REGISTRY, app_name=settings.service_name),
        ),
        logger=logging.getLogger(f"aftersales.{settings.service_name}.faststream"),
    )


async def ensure_topics(settings: ServiceSettings, topics: Iterable[str]) -> None:
    """Create each (logical) topic and its DLQ with the configured partition count, if missing."""
    names = [settings.topic(t) for t in topics]
    wanted = [*names, *(dead_letter_topic(n) for n in names)]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=n,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            for n in wanted
            if n not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another replica created it between our list and create
    finally:
        await admin.close()


async def publish_event(broker: KafkaBroker, topic: str, event: CloudEvent) -> None:
    """Publish one CloudEvent and wait for the broker's acknowledgement (acks=all)."""
    token = otel_context.attach(extract(event.headers())) if event.traceparent else None
    try:
        await broker.publish(event.value(), topic=topic, key=event.key, headers=event.headers())
    finally:
        if token is not None:
            otel_context.detach(token)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_s: float = 0.2

    def delay_s(self, attempt: int) -> float:
        """Return the wait before attempt `attempt + 1` (exponential, capped at 10 s)."""
        return float(min(self.backoff_s * (2 ** (attempt - 1)), 10.0))


def subscribe(
    broker: KafkaBroker,
    settings: ServiceSettings,
    topics: Iterable[str],
    handler: EventHandler,
    *,
    group_id: str | None = None,
    retry: RetryPolicy | None = None,
    ignore_unknown_types: bool = True,
) -> None:
    """Register `handler` for CloudEvents on the logical `topics` with bounded retry and a DLQ.

    Event types outside the contract are a poison message unless `ignore_unknown_types` (the default for
    subscribers that read a stream with types they do not care about) lets them pass handled.
    """
    policy = retry or RetryPolicy(settings.consumer_max_attempts, settings.consumer_backoff_s)
    group = group_id or f"aftersales-{settings.service_name}"
    physical = [settings.topic(t) for t in topics]

    async def _raw(message: Any) -> bytes:  # FastStream must not parse the body: a bad one is ours to park
        return bytes(message.body or b"")

    @broker.subscriber(
        *physical,
        group_id=group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        decoder=_raw,
        title=f"{group}:{','.join(physical)}",
    )
    async def _consume(message: KafkaMessage) -> None:
        record = message.raw_message
        assert not isinstance(record, tuple)
        attempts = 0
        try:
            event = from_kafka(decode_headers(record.headers), record.value)
            if ignore_unknown_types and _unknown_type(event):
                return
            while True:
                attempts += 1
                try:
                    await handler(event)
                    EVENTS_HANDLED.labels(record.topic, event.type).inc()
                    return
                except PoisonEvent:
                    raise
                except Exception as exc:
                    if attempts >= policy.max_attempts:
                        await _dead_letter(broker, record, group, exc, attempts, "retries_exhausted")
                        return
                    CONSUMER_RETRIES.labels(record.topic).inc()
                    log.warning(
                        "handler failed, will retry",
                        extra={"topic": record.topic, "attempt": attempts, "error": repr(exc)[:300]},
                    )
                    await asyncio.sleep(policy.delay_s(attempts))
        except PoisonEvent as exc:
            await _dead_letter(broker, record, group, exc, max(attempts, 1), "poison")


def _unknown_type(event: CloudEvent) -> bool:
    from aftersales.shared.contracts import spec_for

    return spec_for(event.type) is None


async def _dead_letter(
    broker: KafkaBroker, record: Any, group: str, exc: BaseException, attempts: int, kind: str
) -> None:
    """Publish the original message to `<topic>.dlq` with why it failed; raising here means no commit."""
    try:
        original = decode_headers(record.headers)
    except PoisonEvent:
        original = {}
    reason = str(exc) or type(exc).__name__
    headers = {
        **original,
        "dlq_reason": reason[:1000],
        "dlq_error_type": type(exc).__name__,
        "dlq_kind": kind,
        "dlq_attempts": str(attempts),
        "dlq_original_topic": record.topic,
        "dlq_original_partition": str(record.partition),
        "dlq_original_offset": str(record.offset),
        "dlq_consumer_group": group,
        "dlq_failed_at": datetime.now(UTC).isoformat(),
    }
    await broker.publish(
        record.value or b"", topic=dead_letter_topic(record.topic), key=record.key, headers=headers
    )
    DLQ_MESSAGES.labels(record.topic, kind).inc()
    log.error(
        "message parked in dead-letter topic",
        extra={
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "reason": reason[:300],
            "kind": kind,
        },
    )
