"""Kafka wiring on FastStream's KafkaBroker: safe producers, topic set-up, and the reliable consumer.

The reliable consumer commits an offset only after the handler succeeded (or the message was parked in
the DLQ), retries with exponential backoff (transient faults without a dead letter), then publishes the
message to `<topic>.dlq` with the reason in headers and moves on. FastStream's ack policies alone do not
give this: `ACK` commits a failed message, `NACK_ON_ERROR` redelivers it forever. So the subscriber runs
with `NACK_ON_ERROR` (an offset is never committed past a message that was neither handled nor parked),
its decoder (`decode_cloud_events`) turns the polled records into CloudEvents, and a FastStream
middleware (`ReliableConsumer`, given to the subscriber's router) runs the retry and dead-letter loop
around each call of the subscriber's function.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, TopicAlreadyExistsError
from faststream import AckPolicy, BaseMiddleware, StreamMessage
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry import context as otel_context
from opentelemetry.propagate import extract
from prometheus_client import REGISTRY, Counter

from aftersales.shared.adaptive import AdaptiveLimit, BatchCap
from aftersales.shared.contracts import dead_letter_topic
from aftersales.shared.envelope import CloudEvent, PoisonEvent, decode_headers, from_kafka
from aftersales.shared.errors import is_transient
from aftersales.shared.failures import note_failure
from aftersales.shared.kafkaauth import broker_security, client_options
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.telemetry import tracer_provider

log = logging.getLogger("aftersales.kafka")


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event with where it was read: handlers that need an idempotency token per record use the
    position (`partition`, `offset`), which a redelivery repeats and a producer's duplicate does not."""

    event: CloudEvent
    topic: str
    partition: int
    offset: int
    record: Any = field(default=None, repr=False, compare=False)  # the polled record, for the DLQ


EventHandler = Callable[[CloudEvent], Awaitable[None]]
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
# The record a per-event handler is running for (set by the consumer runtime around each call).
CURRENT_DELIVERY: ContextVar[Delivery | None] = ContextVar("aftersales_current_delivery", default=None)

DLQ_MESSAGES = Counter(
    "aftersales_dlq_messages_total",
    "Messages parked in a dead-letter topic, by source topic and reason kind",
    ["topic", "reason"],
)
CONSUMER_RETRIES = Counter(
    "aftersales_consumer_retries_total",
    "Handler attempts that failed and were retried, by kind (transient: never dead-lettered; split: a "
    "whole-batch call that timed out, applied again in halves)",
    ["topic", "kind"],
)
CONSUMER_HANDBACKS = Counter(
    "aftersales_consumer_handbacks_total",
    "Batches handed back after their retry budget, re-polled from their first unfinished record "
    "(a stalled partition: alert on it)",
    ["topic"],
)
DLQ_PUBLISH_FAILURES = Counter(
    "aftersales_dlq_publish_failures_total", "Failed attempts to park a message in its DLQ", ["topic"]
)
EVENTS_IGNORED = Counter(
    "aftersales_events_ignored_total",
    "Events passed over by a subscriber, by topic and reason",
    ["topic", "reason"],
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
        security=broker_security(settings),
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
        **client_options(settings),
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


Position = tuple[str, int]  # a topic and one of its partitions
LARGE_PARTITION_FETCH = 4 * 1024 * 1024  # the most a subscription with larger batches fetches per partition
LARGE_FETCH = 32 * 1024 * 1024  # and per fetch


class PerEvent(Exception):
    """Raised by a batch handler that would rather have this batch handled event by event (say, too much
    of it is work that a whole-batch call does not make cheaper): not a failure, nothing is logged."""


class HandBack(Exception):
    """A batch could not finish within its retry budget. `rewind` says, per partition, the first record
    that did not finish: the consumer is put back there (committing what came before it, in every other
    partition the whole batch), so only what is unfinished is polled again."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.rewind: dict[Position, int] = {}


class Progress:
    """What one poll has finished: records handled (applied or found duplicate), passed over, or parked."""

    def __init__(self, records: Iterable[Any]) -> None:
        self.records = list(records)
        self.finished: set[tuple[str, int, int]] = set()

    def finish(self, record: Any) -> None:
        self.finished.add((record.topic, record.partition, record.offset))

    def is_finished(self, record: Any) -> bool:
        return (record.topic, record.partition, record.offset) in self.finished

    def first_unfinished(self) -> dict[Position, int]:
        """Per partition with an unfinished record, the offset of the first one."""
        out: dict[Position, int] = {}
        for r in self.records:
            if not self.is_finished(r):
                at = (r.topic, r.partition)
                out[at] = min(out.get(at, r.offset), r.offset)
        return out


class FinishedAhead:
    """Offsets a handed-back poll finished past its partition's rewind point: the re-poll passes over
    them instead of applying them again (their effects are durable; redoing them under load is what kept
    an overloaded consumer from ever getting ahead). Only this process's own memory, so bounded and
    cleared freely: forgetting costs a redundant, idempotent apply, never a lost one."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self.offsets: dict[Position, set[int]] = {}

    def __contains__(self, record: Any) -> bool:
        return record.offset in self.offsets.get((record.topic, record.partition), ())

    def remember(self, progress: Progress, rewind: dict[Position, int]) -> None:
        """Keep what a handed-back poll finished past each rewind point; drop what is committed."""
        self.forget(progress, rewind)
        for topic, partition, offset in progress.finished:
            at = (topic, partition)
            if at in rewind and offset > rewind[at]:
                self.offsets.setdefault(at, set()).add(offset)
        if sum(len(s) for s in self.offsets.values()) > self.LIMIT:
            self.offsets.clear()

    def forget(self, progress: Progress, rewind: dict[Position, int] | None = None) -> None:
        """Drop, per partition of the poll, the offsets the commit now covers: those before its rewind
        point, or up to its last record when it finished whole."""
        covered: dict[Position, int] = {}
        for r in progress.records:
            at = (r.topic, r.partition)
            covered[at] = max(covered.get(at, r.offset), r.offset)
        for at, point in (rewind or {}).items():
            covered[at] = point - 1
        for at, offset in covered.items():
            kept = {o for o in self.offsets.get(at, ()) if o > offset}
            if kept:
                self.offsets[at] = kept
            else:
                self.offsets.pop(at, None)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A polled record that is not a CloudEvent of the contract: parked in the DLQ, or passed over when
    it is only of a type outside the contract and the subscriber ignores those."""

    record: Any
    error: PoisonEvent
    unknown_type: bool = False


Decoded = Delivery | Rejected
# What one call of the subscriber's function applies: a planned list of deliveries (see ReliableConsumer).
Runner = Callable[[Sequence[Delivery], bool], Awaitable[None]]
# True while the subscriber's function is offered a whole batch for its batch handler.
WHOLE_BATCH: ContextVar[bool] = ContextVar("aftersales_whole_batch", default=False)
_PLANNED = "_aftersales_planned"  # attribute of a message copy: the deliveries one call applies


def decode_records(records: Sequence[Any]) -> list[Decoded]:
    """Decode polled records into deliveries (binary-mode CloudEvents) or rejections."""
    out: list[Decoded] = []
    for record in records:
        try:
            event = from_kafka(decode_headers(record.headers), record.value)
        except PoisonEvent as exc:
            out.append(Rejected(record, exc))
            continue
        if _unknown_type(event):
            out.append(Rejected(record, PoisonEvent(f"unknown event type {event.type!r}"), unknown_type=True))
            continue
        out.append(Delivery(event, record.topic, record.partition, record.offset, record))
    return out


async def decode_cloud_events(msg: StreamMessage[Any]) -> list[Any]:
    """The subscribers' FastStream decoder: a polled batch becomes deliveries and rejections; a copy of
    it that the reliable consumer planned for one call becomes exactly the deliveries of that call."""
    planned: list[Delivery] | None = getattr(msg, _PLANNED, None)
    if planned is not None:
        return planned
    records = msg.raw_message
    assert isinstance(records, tuple | list)  # a poll gives a tuple, TestKafkaBroker a list
    return decode_records(records)


def subscribe(
    broker: KafkaBroker,
    settings: ServiceSettings,
    topics: Iterable[str],
    handler: EventHandler,
    *,
    group_id: str | None = None,
    retry: RetryPolicy | None = None,
    ignore_unknown_types: bool = True,
    batch_handler: BatchHandler | None = None,
    max_records: int | None = None,
) -> None:
    """Register `handler` for CloudEvents on the logical `topics`: batches, ordered per key, with a DLQ.

    FastStream does the work through its own hooks: a batch subscriber polls, `decode_cloud_events` (the
    subscriber's decoder) turns records into CloudEvents, and `ReliableConsumer` (a FastStream
    middleware of the subscriber's router) owns the outcomes. Records with the same Kafka key (a ticket)
    are handled in order, one after the other; different keys run concurrently, up to
    `consumer_concurrency`. The offsets are committed once, after every record of the batch was handled
    or parked in `<topic>.dlq`. Outcomes: a handler that returns has applied (or found a duplicate); one
    that raises a transient error (`RetryLater`, database or broker unavailable, a timeout) is retried with
    backoff and never dead-lettered; one that raises `PoisonEvent` is dead-lettered at once; any other
    error is retried `max_attempts` times, then dead-lettered. A batch still failing transiently after
    `consumer_retry_budget_s` is handed back, so the consumer stays in its group: each partition is
    rewound to its first unfinished record and the rest committed, and what finished past that record is
    passed over when polled again (redoing finished work is what kept an overloaded consumer behind).
    With `batch_handler`, a whole batch of valid events is first offered to it (one bulk apply); if it
    fails for a reason other than a transient one, the batch falls back to `handler` event by event, so
    one bad event cannot hold the others back.

    Event types outside the contract are a poison message unless `ignore_unknown_types` (the default for
    subscribers that read a stream with types they do not care about) lets them pass, counted.

    `max_records` overrides `consumer_batch_max_records` for a subscription whose batch handler gains
    from larger batches (IoT alerts fold per storm: the more of a storm's alerts one batch holds, the
    fewer writes per alert); its fetch sizes grow in proportion, up to 4 MiB a partition and 32 MiB a
    fetch. A whole-batch call's timeout grows with the batch beyond
    `consumer_batch_max_records` records, up to `consumer_retry_budget_s`, so a large batch is not cut
    for its size.
    """
    consumer = ReliableConsumer(
        broker,
        settings,
        # Consumer groups carry the topic prefix too: environments (or test runs) sharing one cluster
        # must not share groups, or every member joining or leaving anywhere rebalances them all.
        group=settings.topic(group_id or f"aftersales-{settings.service_name}"),
        retry=retry or RetryPolicy(settings.consumer_max_attempts, settings.consumer_backoff_s),
        ignore_unknown_types=ignore_unknown_types,
        batched=batch_handler is not None,
    )
    batch_records = max_records or settings.consumer_batch_max_records
    # A batch is what one fetch brought: larger batches need fetches larger in proportion (bounded).
    scale = max(1.0, batch_records / settings.consumer_batch_max_records)
    partition_bytes = _scaled(settings.consumer_partition_fetch_bytes, scale, LARGE_PARTITION_FETCH)
    fetch_bytes = _scaled(settings.consumer_fetch_max_bytes, scale, LARGE_FETCH)
    physical = [settings.topic(t) for t in topics]
    router = KafkaRouter(middlewares=(consumer,))
    router.subscriber(
        *physical,
        group_id=consumer.group,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        batch=True,
        max_records=batch_records,
        batch_timeout_ms=100,
        max_poll_interval_ms=int(settings.consumer_max_poll_interval_s * 1000),
        # bounded fetches: a consumer far behind holds what it fetched, per partition, in memory
        max_partition_fetch_bytes=partition_bytes,
        fetch_max_bytes=fetch_bytes,
        decoder=decode_cloud_events,
        title=f"{consumer.group}:{','.join(physical)}",
        description=_describe(handler),
    )(_applier(handler, batch_handler))
    broker.include_router(router)


def _scaled(configured: int, scale: float, cap: int) -> int:
    """A fetch size grown by `scale`, never past `cap` (nor below what is configured)."""
    return max(configured, min(int(configured * scale), cap))


def _applier(
    handler: EventHandler, batch_handler: BatchHandler | None
) -> Callable[[list[Delivery]], Awaitable[None]]:
    """Return the subscriber's function: it applies what the reliable consumer planned for one call."""

    async def apply(deliveries: list[Delivery]) -> None:
        if WHOLE_BATCH.get():
            assert batch_handler is not None
            await batch_handler(deliveries)
            return
        for delivery in deliveries:
            token = CURRENT_DELIVERY.set(delivery)
            try:
                with otel_context_of(delivery.event):
                    await handler(delivery.event)
            finally:
                CURRENT_DELIVERY.reset(token)

    return apply


def _describe(handler: EventHandler) -> str:
    types = getattr(handler, "event_types", None)
    handled = ", ".join(types()) if callable(types) else "every event type of the contract"
    return f"CloudEvents (binary mode) handled: {handled}. Poison and exhausted retries: <topic>.dlq."


class ReliableConsumer:
    """The outcome policy of one subscriber, as a FastStream middleware (this object is the middleware
    factory the subscriber's router is given; FastStream makes one `ReliableMiddleware` per poll)."""

    def __init__(
        self,
        broker: KafkaBroker,
        settings: ServiceSettings,
        *,
        group: str,
        retry: RetryPolicy,
        ignore_unknown_types: bool,
        batched: bool,
    ) -> None:
        self.broker = broker
        self.group = group
        self.batched = batched
        self.retry = retry
        self.ignore_unknown_types = ignore_unknown_types
        # keys of a poll handled at once: fewer while handlers time out (see `adaptive`)
        self.limit = AdaptiveLimit(settings.consumer_concurrency, what=f"consumer {group}")
        self.batch_cap = BatchCap(group)  # records per whole-batch call: fewer after one timed out
        self.timeout_s = settings.consumer_handler_timeout_s
        self.standard_batch = settings.consumer_batch_max_records
        self.budget_s = settings.consumer_retry_budget_s
        self.finished_ahead = FinishedAhead()

    def __call__(self, msg: Any, /, *, context: Any) -> ReliableMiddleware:
        return ReliableMiddleware(msg, context=context, consumer=self)

    async def handle(self, decoded: Sequence[Decoded], run: Runner) -> None:
        """Apply one poll; on a hand-back, say where each partition must be rewound to (`HandBack.rewind`)
        and remember what finished past that point, so the re-poll passes it over."""
        todo = []
        for item in decoded:
            if item.record in self.finished_ahead:
                EVENTS_IGNORED.labels(item.record.topic, "finished_before_hand_back").inc()
            else:
                todo.append(item)
        progress = Progress(item.record for item in todo)
        try:
            await self._handle(todo, run, progress)
        except HandBack as exc:
            exc.rewind = progress.first_unfinished()
            self.finished_ahead.remember(progress, exc.rewind)
            raise
        self.finished_ahead.forget(progress)

    async def _handle(self, decoded: Sequence[Decoded], run: Runner, progress: Progress) -> None:
        """Dead-letter the rejections, then apply the deliveries through `run`: the whole batch first
        when batched, else (or when that fails for good) one by one, in order per key."""
        deadline = asyncio.get_running_loop().time() + self.budget_s
        deliveries: list[Delivery] = []
        for item in decoded:
            if isinstance(item, Delivery):
                deliveries.append(item)
                continue
            if item.unknown_type and self.ignore_unknown_types:
                EVENTS_IGNORED.labels(item.record.topic, "unknown_type").inc()
            else:
                await self._dead_letter(item.record, item.error, 1, "poison", deadline)
            progress.finish(item.record)
        if not deliveries:
            return
        if self.batched and await self._try_batch(run, deliveries, deadline, progress):
            return
        # what a part of the batch handler's applied is finished already
        chains = _chains_by_key([d for d in deliveries if not progress.is_finished(d.record)])

        async def in_order(chain: list[Delivery]) -> None:
            for d in chain:
                await self._handle_one(run, d, deadline)
                progress.finish(d.record)

        results = await asyncio.gather(*(in_order(c) for c in chains), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]  # the unfinished part is polled again (handlers are idempotent)

    async def _try_batch(
        self, run: Runner, deliveries: list[Delivery], deadline: float, progress: Progress
    ) -> bool:
        """Offer the batch to the batch handler; True when it applied all of it. A call that times out
        is split in two halves applied one after the other (each key's events keep their order), down to
        single events: an overloaded store then still makes progress, which a hand-back keeps, instead
        of retrying a batch too large for the timeout until the budget runs out; later polls are cut to
        the size that last fitted (`BatchCap`). False sends what is not applied yet to the per-event path."""
        parts, attempt = self.batch_cap.parts(deliveries), 0
        loop = asyncio.get_running_loop()
        while parts:
            part = parts[0]
            attempt += 1
            timeout_s, started = self._batch_timeout_s(len(part)), loop.time()
            try:
                await asyncio.wait_for(run(part, True), timeout_s)
            except (PoisonEvent, PerEvent):
                return False
            except Exception as exc:
                if isinstance(exc, TimeoutError) and len(part) > 1:
                    CONSUMER_RETRIES.labels(part[0].topic, "split").inc()
                    self.batch_cap.timed_out(len(part))
                    note_failure(*_subjects(part))  # cancelled mid-way: part of it may be written
                    parts[0:1] = [part[: len(part) // 2], part[len(part) // 2 :]]
                    continue
                if not is_transient(exc):
                    note_failure(*_subjects(part))
                    log.warning("batch handler failed; handling the batch event by event", exc_info=True)
                    return False
                await self._back_off(part[0].record, attempt, exc, deadline)
                continue
            parts.pop(0)
            attempt = 0
            self.batch_cap.finished(len(part), loop.time() - started, timeout_s)
            for d in part:
                progress.finish(d.record)
                EVENTS_HANDLED.labels(d.topic, d.event.type).inc()
        return True

    def _batch_timeout_s(self, records: int) -> float:
        """The handler timeout for every `consumer_batch_max_records` records of a whole-batch call, up to
        the retry budget (which stays below the consumer's max poll interval)."""
        scaled = self.timeout_s * records / self.standard_batch
        return max(self.timeout_s, min(scaled, self.budget_s))

    async def _handle_one(self, run: Runner, delivery: Delivery, deadline: float) -> None:
        record, attempt = delivery.record, 0
        while True:
            attempt += 1
            try:
                async with self.limit:  # taken per attempt: a key backing off holds no place
                    await asyncio.wait_for(run([delivery], False), self.timeout_s)
            except PoisonEvent as exc:  # refused before anything was written: not a failure to look into
                await self._dead_letter(record, exc, attempt, "poison", deadline)
                return
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    self.limit.timed_out()  # the store does not keep up: fewer keys at once
                if not is_transient(exc) and attempt >= self.retry.max_attempts:
                    await self._dead_letter(record, exc, attempt, "retries_exhausted", deadline)
                    return
                await self._back_off(record, attempt, exc, deadline)
                continue
            self.limit.succeeded()
            EVENTS_HANDLED.labels(delivery.topic, delivery.event.type).inc()
            return

    async def _back_off(self, record: Any, attempt: int, exc: BaseException, deadline: float) -> None:
        """Wait before the next attempt; past the batch's budget, hand the batch back to Kafka."""
        kind = "transient" if is_transient(exc) else "error"
        CONSUMER_RETRIES.labels(record.topic, kind).inc()
        note_failure(*_subjects_of(record))
        delay = self.retry.delay_s(attempt)
        log.warning(
            "handler failed, will retry",
            extra={"topic": record.topic, "attempt": attempt, "kind": kind, "error": repr(exc)[:300]},
        )
        loop = asyncio.get_running_loop()
        if loop.time() + delay > deadline:
            CONSUMER_HANDBACKS.labels(record.topic).inc()
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
            raise HandBack(f"{record.topic}: still failing after the retry budget: {exc!r}") from exc
        await asyncio.sleep(delay)

    async def _dead_letter(
        self, record: Any, exc: BaseException, attempts: int, kind: str, deadline: float
    ) -> None:
        """Park a message in its DLQ; a failed DLQ publish backs off (then hands back), never spins."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await _dead_letter(self.broker, record, self.group, exc, attempts, kind)
                return
            except Exception as publish_error:
                DLQ_PUBLISH_FAILURES.labels(record.topic).inc()
                await self._back_off(record, attempt, publish_error, deadline)


class ReliableMiddleware(BaseMiddleware):
    """Wraps one poll of a subscriber: the retry/DLQ loop of `ReliableConsumer` around FastStream's call
    of the subscriber's function, called once per planned unit (the whole batch, or one event)."""

    def __init__(self, msg: Any, /, *, context: Any, consumer: ReliableConsumer) -> None:
        super().__init__(msg, context=context)
        self.consumer = consumer

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        async def run(planned: Sequence[Delivery], whole: bool) -> None:
            unit = copy.copy(msg)  # a copy decodes afresh: to what is planned for this call
            setattr(unit, _PLANNED, list(planned))
            token = WHOLE_BATCH.set(whole)
            try:
                await call_next(unit)
            finally:
                WHOLE_BATCH.reset(token)

        decoded = await msg.decode()
        assert isinstance(decoded, list)
        try:
            await self.consumer.handle(decoded, run)
        except HandBack as exc:
            if not _rewind(msg, exc.rewind):
                raise  # FastStream's nack rewinds every partition of the batch to its first record
            log.warning("batch handed back from its first unfinished records", extra={"at": repr(exc.rewind)})
        return None  # acknowledged: the commit takes each partition's position, rewound or not


def _rewind(msg: StreamMessage[Any], points: dict[Position, int]) -> bool:
    """Seek each partition with an unfinished record back to it; False without a consumer to seek."""
    seek = getattr(getattr(msg, "consumer", None), "seek", None)
    if seek is None:
        return False
    for (topic, partition), offset in points.items():
        with contextlib.suppress(IllegalStateError):  # revoked meanwhile: the new owner starts at the commit
            seek(TopicPartition(topic, partition), offset)
    return True


def otel_context_of(event: CloudEvent) -> contextlib.AbstractContextManager[None]:
    """Run a handler inside the trace the event carries (one trace per ticket across services)."""
    if not event.traceparent:
        return contextlib.nullcontext()
    return _attached(extract(event.headers()))


@contextlib.contextmanager
def _attached(ctx: Any) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


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


def _subjects_of(record: Any) -> tuple[str, ...]:
    """The subject a record's handler worked on (its key: the ticket id), for `note_failure`."""
    return (record.key.decode(errors="replace"),) if record.key else ()


def _subjects(deliveries: Sequence[Delivery]) -> tuple[str, ...]:
    keys = [_subjects_of(d.record) for d in deliveries]
    return () if any(not k for k in keys) else tuple({k[0] for k in keys})


def _chains_by_key(deliveries: Sequence[Delivery]) -> list[list[Delivery]]:
    """One chain per key, applied one after the other: each partition's records in offset order, the
    partitions' merged by when each record was produced. One ticket's events come on several topics
    (its facts on the tickets topic, its resolution on the assignments topic): a poll holding both
    applies them in the order they happened, so a handler that waits for the earlier one (RetryLater)
    is not queued in front of it until its retry budget runs out."""
    parts: dict[Any, dict[tuple[str, int], list[Delivery]]] = {}
    for d in deliveries:
        parts.setdefault(d.record.key, {}).setdefault((d.record.topic, d.record.partition), []).append(d)
    return [list(heapq.merge(*by_partition.values(), key=_produced_at)) for by_partition in parts.values()]


def _produced_at(delivery: Delivery) -> int:
    """The record's timestamp (ms; the producer's time): heapq.merge keeps each partition's own order."""
    return int(getattr(delivery.record, "timestamp", 0) or 0)
