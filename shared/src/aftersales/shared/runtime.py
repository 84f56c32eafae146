"""A service's process runtime: MongoDB, the Kafka broker, the outbox relay and the timer sweeper.

Start order: database reachable and indexed -> topics exist -> broker (consumers) started -> relay and
sweeper running. Stop order (graceful shutdown, after uvicorn finished in-flight HTTP requests): stop the
timer sweeper and background tasks -> stop consuming and let in-flight handlers finish -> flush the outbox
(the producer is still open) -> close the producer -> close the database client; all of it within
`shutdown_grace_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faststream._internal.parser import DefaultCodec
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.producer import AioKafkaFastProducer
from prometheus_client import Counter
from pymongo import AsyncMongoClient

from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import ensure_topics, make_broker, publish_event
from aftersales.shared.kafkaauth import client_options
from aftersales.shared.mongo import Database, Document, IndexSpec, ensure_indexes, make_client
from aftersales.shared.outbox import OutboxRelay, outbox_indexes
from aftersales.shared.routes import TimerRoutes
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.timers import TIMER_INDEXES, DurableTimers, TimerHandler

log = logging.getLogger("aftersales.runtime")


BackgroundTask = Callable[[asyncio.Event], Awaitable[None]]
OUTBOX_STALL_S = 60.0  # an outbox failing this long makes the service not ready
PRODUCER_RENEWALS = Counter(
    "aftersales_producer_renewals_total", "Kafka producers recreated after publishing kept failing"
)


def periodic(
    action: Callable[[], Awaitable[object]], interval_s: float, *, what: str, wait_first: bool = False
) -> BackgroundTask:
    """Return a background task (for `RuntimeSpec.extra_tasks`) running `action` every `interval_s`.

    With `wait_first` the first run comes after one interval instead of at start-up. A failing run is
    logged and retried at the next interval; it never ends the loop.
    """

    async def run(stop: asyncio.Event) -> None:
        if wait_first:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
        while not stop.is_set():
            try:
                await action()
            except Exception:
                log.warning("%s failed; will retry", what, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    return run


class InfrastructureUnreachable(Exception):
    """Kafka or MongoDB could not be reached within the configured timeout."""


@dataclass
class RuntimeSpec:
    """What a service needs from the runtime: its topics, collections with outboxes, indexes, timers."""

    consumes: Sequence[str] = ()
    produces: Sequence[str] = ()
    outbox_collections: Sequence[str] = ()
    indexes: Sequence[IndexSpec] = ()
    extra_tasks: list[BackgroundTask] = field(default_factory=list)


@dataclass(frozen=True)
class InProcess:
    """Infrastructure a service-level test supplies in place of the servers (`aftersales.shared.testing`):
    the database client. A runtime built under it neither checks the servers nor creates topics."""

    mongo_client: Callable[[ServiceSettings], AsyncMongoClient[Document]]


# Set only by `aftersales.shared.testing` around `app.build(settings)`; production never sets it.
IN_PROCESS: ContextVar[InProcess | None] = ContextVar("aftersales_in_process", default=None)


class ServiceRuntime:
    def __init__(self, settings: ServiceSettings, spec: RuntimeSpec) -> None:
        self.settings = settings
        self.spec = spec
        in_process = IN_PROCESS.get()
        self.in_process = in_process is not None
        self.client = in_process.mongo_client(settings) if in_process else make_client(settings)
        self.db: Database = self.client[settings.database_name]
        self.broker = make_broker(settings)
        self.relay = OutboxRelay(
            self.db,
            spec.outbox_collections,
            self.publish,
            topic_of=settings.topic,
            poll_interval_s=settings.outbox_poll_interval_s,
            heartbeat_s=settings.outbox_heartbeat_s,
            sweep_interval_s=settings.outbox_sweep_interval_s,
            scan_timeout_s=settings.mongodb_scan_timeout_s,
        )
        self.timers = DurableTimers(
            self.db,
            lease_s=settings.timer_lease_s,
            handler_timeout_s=settings.timer_handler_timeout_s,
            poll_interval_s=settings.timer_poll_interval_s,
            scan_interval_s=settings.timer_scan_interval_s,
            scan_timeout_s=settings.mongodb_scan_timeout_s,
        )
        # A process gone (or a write unconfirmed) may have left timers only its memory knew of.
        self.relay.on_peer_change(self.timers.request_refresh)
        self.timer_routes = TimerRoutes()
        self._stop = asyncio.Event()
        self._publish_failing_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.started = False

    def on_timer(self, kind: str, handler: TimerHandler) -> None:
        """Fire `handler` for due timers of `kind` (register before the runtime starts)."""
        self.timer_routes.on(kind, handler)

    async def publish(self, topic: str, event: CloudEvent) -> None:
        """Publish one event; a publish failing for long recreates the producer (see `renew_producer`)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                publish_event(self.broker, topic, event), timeout=self.settings.kafka_publish_timeout_s
            )
        except Exception:
            now = loop.time()
            if self._publish_failing_since is None:
                self._publish_failing_since = now
            elif now - self._publish_failing_since >= 2 * self.settings.kafka_publish_timeout_s:
                self._publish_failing_since = now  # one renewal per period of failures
                await renew_producer(self.broker)
            raise
        self._publish_failing_since = None

    async def start(self) -> None:
        if not self.in_process:
            await check_infrastructure(self.settings)
        await ensure_indexes(
            self.db, [*self.spec.indexes, *outbox_indexes(self.spec.outbox_collections), *TIMER_INDEXES]
        )
        if not self.in_process:
            await ensure_topics(self.settings, [*self.spec.consumes, *self.spec.produces])
        await self.broker.start()
        self._tasks.append(asyncio.create_task(self.relay.run(self._stop), name="outbox-relay"))
        if self.timer_routes:
            self._tasks.append(
                asyncio.create_task(self.timers.run(self.timer_routes, self._stop), name="timer-sweeper")
            )
        for factory in self.spec.extra_tasks:
            self._tasks.append(asyncio.ensure_future(factory(self._stop)))
        self.started = True
        log.info("service started", extra={"database": self.settings.database_name})

    async def stop(self) -> None:
        """Graceful shutdown in what is left of `shutdown_grace_s` after HTTP had `http_drain_s`: timers
        stop firing, consumers finish in-flight work, the outbox is flushed, then connections close."""
        if not self.started:
            await self.client.close()
            return
        self.started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s - http_drain_s(self.settings)
        # a hung handler must not eat the time of the flush: consumers and tasks end by `flush_from`
        flush_from = deadline - min(5.0, (deadline - loop.time()) / 3)
        self._stop.set()  # no timer fires from now on; what consumers still write is flushed below
        self.relay.wake()
        for subscriber in list(self.broker.subscribers):  # stop consuming; in-flight handlers finish
            try:
                await asyncio.wait_for(subscriber.stop(), timeout=max(flush_from - loop.time(), 0.1))
            except Exception:
                log.warning("a consumer did not stop cleanly", exc_info=True)
        try:
            await asyncio.wait_for(
                asyncio.gather(*self._tasks, return_exceptions=True),
                timeout=max(flush_from - loop.time(), 0.1),
            )
        except TimeoutError:
            log.warning("background tasks did not finish within the shutdown grace period")
            for task in self._tasks:
                task.cancel()
        try:  # the relay's last pass ran when it stopped; publish anything written since
            await asyncio.wait_for(self.relay.drain(sweep=False), timeout=max(deadline - loop.time(), 0.1))
            await asyncio.wait_for(self.relay.release(), timeout=max(deadline - loop.time(), 0.1))
        except Exception:
            log.warning("outbox not fully flushed at shutdown; the next start-up sweep publishes it")
        with contextlib.suppress(Exception):  # closes the producer, now that the outbox is flushed
            await asyncio.wait_for(self.broker.stop(), timeout=max(deadline - loop.time(), 1.0))
        await self.client.close()
        log.info("service stopped")

    async def readiness(self) -> dict[str, bool]:
        """Return each readiness check: MongoDB and Kafka reachable; every consumer running and polling
        (none idle past `consumer_max_poll_interval_s`, where Kafka evicts it: a stuck handler, while a
        slow batch on an overloaded store stays within it); and the outbox publishing: not failing for
        longer than `OUTBOX_STALL_S` (the producer is unusable), and no document waiting longer than that
        for its events to be published (the relay falls behind)."""
        running = self.started and all(getattr(s, "running", True) for s in self.broker.subscribers)
        stall_s = self.settings.consumer_max_poll_interval_s  # where Kafka takes the partitions away
        running = running and all(idle < stall_s for idle in consumers_idle_s(self.broker))
        stalled = self.relay.stalled_since
        outbox = stalled is None or asyncio.get_running_loop().time() - stalled < OUTBOX_STALL_S
        outbox = outbox and self.relay.oldest_pending_s() < OUTBOX_STALL_S
        checks = {"mongodb": False, "kafka": False, "consumers": running, "outbox": outbox}
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout=2.0)
            checks["mongodb"] = True
        except Exception:
            pass
        with contextlib.suppress(Exception):
            checks["kafka"] = bool(await self.broker.ping(timeout=2.0))
        return checks


def consumers_idle_s(broker: KafkaBroker) -> list[float]:
    """Return, for each Kafka consumer of the broker's subscribers, the seconds since it last polled (the
    same idle time after which Kafka's `max.poll.interval.ms` evicts it). A consumer that is not started
    has none. aiokafka keeps the figure on its subscription state, which has no public accessor."""
    idle: list[float] = []
    for subscriber in broker.subscribers:
        consumers = getattr(subscriber, "consumer_subgroup", None) or [getattr(subscriber, "consumer", None)]
        for consumer in consumers:
            state = getattr(consumer, "_subscription", None)
            seconds = getattr(state, "fetcher_idle_time", None)
            if isinstance(seconds, int | float):
                idle.append(float(seconds))
    return idle


def http_drain_s(settings: ServiceSettings) -> int:
    """Return the seconds in-flight HTTP requests get after SIGTERM (uvicorn's graceful timeout); the
    runtime stops in the rest of `shutdown_grace_s`, so the whole shutdown fits in it."""
    return max(1, min(5, int(settings.shutdown_grace_s / 4)))


async def renew_producer(broker: KafkaBroker) -> None:
    """Replace the broker's Kafka producer with a new one.

    aiokafka's idempotent producer can stay stuck after a broker restart or a fatal sequence error,
    retrying `NotLeaderForPartitionError` forever (aiokafka issues 1017 and 1018), while a new producer
    works at once. FastStream has no public call for this, so it goes through the broker's config the
    same way `KafkaBroker.connect` does."""
    config = broker.config
    fast_producer = config.producer
    assert isinstance(fast_producer, AioKafkaFastProducer)
    log.warning("publishing keeps failing: recreating the Kafka producer")
    PRODUCER_RENEWALS.inc()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(fast_producer.disconnect(), timeout=5)
    producer = AIOKafkaProducer(**broker._connection_kwargs)
    await fast_producer.connect(
        producer, serializer=config.fd_config._serializer, codec=config.broker_codec or DefaultCodec()
    )


async def check_infrastructure(settings: ServiceSettings) -> None:
    """Raise InfrastructureUnreachable with one clear sentence if Kafka or MongoDB does not answer."""
    client = make_client(settings)
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=settings.mongodb_connect_timeout_s + 1)
    except Exception as exc:
        raise InfrastructureUnreachable(
            f"cannot reach MongoDB at {_redact(settings.mongodb_uri.get_secret_value())} within "
            f"{settings.mongodb_connect_timeout_s:g}s ({type(exc).__name__}); check MONGODB_URI"
        ) from None
    finally:
        await client.close()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
        **client_options(settings),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout=settings.kafka_connect_timeout_s)
    except Exception as exc:
        raise InfrastructureUnreachable(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers} within "
            f"{settings.kafka_connect_timeout_s:g}s ({type(exc).__name__}); check KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _redact(uri: str) -> str:
    """Return a MongoDB URI without its password."""
    if "@" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
