"""Service-level tests in-process: a service built exactly as `app.build(settings)` builds it, with an
in-memory MongoDB behind the stores and FastStream's `TestKafkaBroker` in place of Kafka.

Only for unit and service-level tests (a dev dependency, `mongomock`, backs the database); integration
tests keep the real servers. Usage::

    async with in_process(build, Settings(**FAST)) as svc:
        await svc.deliver(ticket_created("T-1"), replicas=2)  # two consumers racing on one record
        [assigned] = await svc.published.wait_for("aftersales.assignment.assigned.v1")
        r = await svc.http.get("/v1/work-orders/T-1", headers=svc.auth("dev-admin-token"))
        await svc.fire_timers(now=later)  # the timer sweeper, without waiting for the clock

A published event reaches the service's subscribers inline (`deliver` returns once they handled it),
as Kafka would deliver it: by key to one of `PARTITIONS` partitions, each partition's records handled
in offset order by each consumer group, different partitions at once. The events the service
publishes (through its outbox relay, in the background) are collected in `published`; the headers of
messages it parks in a dead-letter topic in `dead_letters`.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from faststream._internal.testing.broker import change_producer
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.testing import FakeProducer
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from aftersales.shared.contracts import dead_letter_topic, spec_for
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import TicketCreated, WorkOrderAssigned, WorkOrderResolved
from aftersales.shared.envelope import CloudEvent, decode_headers, from_kafka, new_event
from aftersales.shared.kafka import publish_event
from aftersales.shared.mongo import Document
from aftersales.shared.mongo_in_memory import InMemoryMongo
from aftersales.shared.runtime import IN_PROCESS, InProcess, ServiceRuntime
from aftersales.shared.settings import DEVELOPMENT_TOKENS, ServiceSettings

__all__ = [
    "FAST",
    "EventLog",
    "InMemoryMongo",
    "ServiceUnderTest",
    "contract_event",
    "in_process",
    "ticket_created",
    "work_order_assigned",
    "work_order_resolved",
]

S = TypeVar("S", bound=ServiceSettings)
PARTITIONS = 4  # of every topic in-process
_REPLICAS: ContextVar[int] = ContextVar("aftersales_test_replicas", default=1)  # see `deliver`

# Settings that make a service quick to react in-process; pass them to the service's Settings.
FAST: Mapping[str, Any] = {
    "environment": "development",
    "api_tokens": json.dumps(DEVELOPMENT_TOKENS),  # explicit: the environment of the test run is ignored
    "rate_limit": "",
    "kafka_topic_prefix": "",
    "mongodb_database": "",
    "outbox_poll_interval_s": 0.02,
    "consumer_backoff_s": 0.01,
    "consumer_retry_budget_s": 5.0,
    "timer_poll_interval_s": 0.05,
    "timer_scan_interval_s": 0.5,
    "shutdown_grace_s": 4.0,
}


# ------------------------------------------------------------------------------------------- Kafka


class _PartitionedProducer(FakeProducer):
    """TestKafkaBroker's producer, delivering as Kafka partitions do: a record goes to the partition of
    its key and gets that partition's next offset, and each subscriber (consumer group) handles one
    partition's records one after the other, in offset order; different partitions run concurrently.

    FastStream's own puts every record at partition 0, offset 0 (handlers that deduplicate by position,
    as intake's storm folding does, would take each new record for a redelivery of the first) and runs
    concurrent publishes concurrently (a later record of a partition could be handled first)."""

    def __init__(self, broker: KafkaBroker, brokers: Sequence[KafkaBroker]) -> None:
        super().__init__(broker, brokers)
        self._next_offset: dict[tuple[str, int], int] = {}
        self._placed: dict[int, ConsumerRecord[Any, Any]] = {}  # kept alive, so ids stay unique
        self._reading: dict[tuple[int, str, int], asyncio.Lock] = {}

    async def _execute_handler(self, msg: Any, topic: str, handler: Any) -> ConsumerRecord[Any, Any]:
        [record] = msg if isinstance(msg, list) else [msg]  # publish() sends one record at a time
        if id(record) not in self._placed:  # one record goes to every matching subscriber
            self._placed[id(record)] = record
            record.partition = zlib.crc32(record.key or b"") % PARTITIONS
            position = (record.topic, record.partition)
            record.offset = self._next_offset.get(position, 0)
            self._next_offset[position] = record.offset + 1
        # Placed and queued in one step (no await between): the lock's FIFO order is the offset order.
        reading = self._reading.setdefault((id(handler), record.topic, record.partition), asyncio.Lock())
        async with reading:
            replicas = await asyncio.gather(
                *(self._consume(msg, topic, handler) for _ in range(_REPLICAS.get()))
            )
            return replicas[0]

    async def _consume(self, msg: Any, topic: str, handler: Any) -> ConsumerRecord[Any, Any]:
        _REPLICAS.set(1)  # what the handler publishes itself is consumed once
        return await FakeProducer._execute_handler(self, msg, topic, handler)


class _InProcessKafka(TestKafkaBroker):
    @contextmanager
    def _patch_producer(self, broker: KafkaBroker) -> Iterator[None]:
        with change_producer(broker.config.broker_config, _PartitionedProducer(broker, self.brokers)):
            yield


@dataclass
class EventLog:
    """The CloudEvents seen on some topics, in order of publication."""

    events: list[CloudEvent] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, event: CloudEvent) -> None:
        self.events.append(event)
        self._arrived.set()

    def of_type(self, type_: str) -> list[CloudEvent]:
        return [e for e in self.events if e.type == type_]

    async def wait_for(
        self,
        type_: str,
        where: Callable[[CloudEvent], bool] = lambda _: True,
        *,
        count: int = 1,
        timeout_s: float = 5.0,
    ) -> list[CloudEvent]:
        """Return the first `count` events of `type_` matching `where`; fail after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            found = [e for e in self.of_type(type_) if where(e)]
            if len(found) >= count:
                return found[:count]
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = [e.type for e in self.events]
                raise AssertionError(f"{count} x {type_} not published within {timeout_s}s; saw {seen}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)
            except TimeoutError:
                pass


def _record_into(
    broker: KafkaBroker, topics: Sequence[str], keep: Callable[[ConsumerRecord[Any, Any]], None]
) -> None:
    """Subscribe a recorder (no consumer group: it sees every message) to `topics`."""

    async def _raw(message: Any) -> Any:
        return message.body

    @broker.subscriber(*topics, decoder=_raw, title=f"recorder:{','.join(topics)}")
    async def _record(message: KafkaMessage) -> None:
        record = message.raw_message
        assert isinstance(record, ConsumerRecord)
        keep(record)


# ------------------------------------------------------------------------------ contract events

INTAKE, ROUTING = "/aftersales/intake", "/aftersales/routing"


def contract_event(data: BaseModel, *, source: str) -> CloudEvent:
    """Return `data` in the envelope its producer gives it, with its ticket (or grid) as the subject."""
    subject = str(getattr(data, "ticket_id", None) or getattr(data, "grid_id", ""))
    return new_event(data, source=source, subject=subject)


def ticket_created(ticket_id: str, **facts: Any) -> CloudEvent:
    """Return intake's `ticket.created` of a web request for an air conditioner (override any field)."""
    defaults: dict[str, Any] = {
        "channel": Channel.WEB,
        "category": Category.HARDWARE_FAULT,
        "priority": Priority.P3,
        "customer_id": f"C-{ticket_id}",
        "region_code": "310000/310100/310104/000001",
        "device_type": "air_conditioner",
        "created_at": datetime.now(UTC),
        "rules_version": "test",
    }
    return contract_event(TicketCreated(ticket_id=ticket_id, **{**defaults, **facts}), source=INTAKE)


def _work_order(ticket_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "ticket_id": ticket_id,
        "grid_id": "grid-7",
        "occurred_at": datetime.now(UTC),
        "technician_id": "tech-42",
        "priority": Priority.P3,
        "category": Category.HARDWARE_FAULT,
    }
    return {**defaults, **fields}


def work_order_assigned(ticket_id: str, **fields: Any) -> CloudEvent:
    """Return routing's `assignment.assigned` to technician tech-42 of grid-7 (override any field)."""
    data = WorkOrderAssigned(**_work_order(ticket_id, {"tier": 1, "via": "direct", **fields}))
    return contract_event(data, source=ROUTING)


def work_order_resolved(ticket_id: str, **fields: Any) -> CloudEvent:
    """Return routing's `assignment.resolved` by technician tech-42 of grid-7 (override any field)."""
    data = WorkOrderResolved(**_work_order(ticket_id, {"resolution_code": "replaced_part", **fields}))
    return contract_event(data, source=ROUTING)


# ------------------------------------------------------------------------------------- the service


@dataclass
class ServiceUnderTest:
    """A running service: its app and runtime, an HTTP client, and the events it published."""

    app: FastAPI
    runtime: ServiceRuntime
    http: httpx.AsyncClient
    published: EventLog
    dead_letters: list[dict[str, str]]  # the headers of each parked message: dlq_reason, dlq_kind, ...

    @property
    def settings(self) -> ServiceSettings:
        return self.runtime.settings

    @staticmethod
    def auth(token: str = "dev-admin-token") -> dict[str, str]:
        """Return the Authorization header of one of the development tokens."""
        return {"Authorization": f"Bearer {token}"}

    async def deliver(
        self, event: CloudEvent, *, topic: str | None = None, copies: int = 1, replicas: int = 1
    ) -> None:
        """Publish `event` to its contract topic (or `topic`) `copies` times (a producer's or the outbox's
        duplicates), each record handled by `replicas` consumers of a group at once (two replicas
        overlapping in a rebalance); return once the subscribers handled them all."""
        if topic is None:
            spec = spec_for(event.type)
            assert spec is not None, f"{event.type} is not in the contract"
            topic = spec.topic.value
        physical = self.settings.topic(topic)
        token = _REPLICAS.set(replicas)
        try:
            await asyncio.gather(
                *(publish_event(self.runtime.broker, physical, event) for _ in range(copies))
            )
        finally:
            _REPLICAS.reset(token)

    async def fire_timers(self, *, now: datetime | None = None, max_rounds: int = 100) -> int:
        """Fire the timers due at `now` (default: the present), then those their handlers armed due by
        then, until none is left (the sweeper, without waiting for the clock); return how many ran."""
        timers, fired = self.runtime.timers, 0
        for _ in range(max_rounds):
            await timers.refresh()
            at = now or datetime.now(UTC)
            done = await timers.fire_due(self.runtime.timer_routes, now=at)
            if not done and not await self._timers_running():
                return fired
            fired += done
        raise AssertionError(f"timers still due after {max_rounds} rounds: a handler keeps re-arming one")

    async def _timers_running(self, wait_s: float = 10.0) -> bool:
        """Wait for the handlers the service's own sweeper is running (it may have claimed a due timer
        just before `fire_timers` looked) to end; return whether there were any."""
        timers, waited = self.runtime.timers, False
        deadline = asyncio.get_running_loop().time() + wait_s
        while timers.firing:
            assert asyncio.get_running_loop().time() < deadline, (
                f"timer handlers running for 10 s: {timers.firing}"
            )
            waited = True
            await asyncio.sleep(0.02)
        return waited

    async def published_exactly(
        self, type_: str, count: int = 1, where: Callable[[CloudEvent], bool] = lambda _: True
    ) -> list[CloudEvent]:
        """Wait for `count` events of `type_` (matching `where`), publish whatever else is pending, and
        return them; fail if there are more: what a duplicate must not cause."""
        await self.published.wait_for(type_, where, count=count)
        await self.drain_outbox()
        found = [e for e in self.published.of_type(type_) if where(e)]
        assert len(found) == count, f"{len(found)} x {type_} published, expected {count}"
        return found

    async def drain_outbox(self) -> int:
        """Publish every pending outbox event now; return how many."""
        return await self.runtime.relay.drain()


@asynccontextmanager
async def in_process(build: Callable[[S], FastAPI], settings: S) -> AsyncIterator[ServiceUnderTest]:
    """Build the service with `build(settings)` on in-memory infrastructure, start it, and stop it after."""
    database = InMemoryMongo()
    token = IN_PROCESS.set(InProcess(mongo_client=lambda _: cast(AsyncMongoClient[Document], database)))
    try:
        app = build(settings)
    finally:
        IN_PROCESS.reset(token)
    runtime: ServiceRuntime = app.state.runtime
    assert runtime.in_process, "the app's runtime was not built by this build call"
    published, dead_letters = EventLog(), list[dict[str, str]]()
    if runtime.spec.produces:
        _record_into(
            runtime.broker,
            [settings.topic(t) for t in runtime.spec.produces],
            lambda r: published.append(from_kafka(decode_headers(r.headers), r.value)),
        )
    if runtime.spec.consumes:
        _record_into(
            runtime.broker,
            [dead_letter_topic(settings.topic(t)) for t in runtime.spec.consumes],
            lambda r: dead_letters.append(decode_headers(r.headers)),
        )
    async with (
        _InProcessKafka(runtime.broker, connect_only=True),  # runtime.start() starts the broker
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http,
    ):
        yield ServiceUnderTest(app, runtime, http, published, dead_letters)
