"""The delivery holes of issue 10 that no other test pins down, each on the real broker and database:

- X1: a rollup delta replayed after more than 500 newer ones on the same hot buckets is counted once; a
  finished batch's pending delta goes with its subject's next write, a crashed batch's stays for recovery;
- X2: two outbox relay replicas on one collection lose nothing, keep each document's order, and only
  duplicate across replicas (never within one);
- S2: a producer dead for good is recreated and the outbox drains; /readyz is red while the outbox stalls;
- S3: a hung consumer handler is cut by its timeout and retried, in its group, never dead-lettered; a hung
  timer handler holds its lease (renewed while it runs) until its timeout cuts it, so another replica
  does not fire the timer a second time; a batch handed back after its retry budget is polled again only
  from what did not finish; /readyz is red while a consumer stops polling, green while it only idles;
- S5: shutdown stops timers at once, lets an in-flight handler finish, flushes what it wrote before the
  producer closes, and ends within `shutdown_grace_s` even when a handler hangs.

The shared pieces run in this process (as in test_timers_outbox.py), so a fault can be injected exactly
where it happens in production: the producer's send, a handler, a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import OutOfOrderSequenceNumber
from harness import Infra, data_of, headers_of, mongo, read_to_end, topic_partitions, unique, wait_until

import aftersales.shared.runtime as runtime_module
from aftersales.metrics.service import Recording
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import TicketCancelled, TicketCreated
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import RetryLater
from aftersales.shared.kafka import CONSUMER_HANDBACKS, ensure_topics, make_broker, publish_event, subscribe
from aftersales.shared.mongo import ensure_indexes
from aftersales.shared.outbox import OutboxRelay, new_with_events, outbox_indexes, with_events
from aftersales.shared.runtime import PRODUCER_RENEWALS, RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.testing import work_order_assigned
from aftersales.shared.timers import TIMER_INDEXES, DurableTimers, Timer


def settings_for(infra: Infra, **extra: Any) -> ServiceSettings:
    """Settings of an in-process 'service' with its own topic prefix and database."""
    prefix = unique("h")
    values: dict[str, Any] = {
        "service_name": "holes",
        "kafka_bootstrap_servers": infra.kafka,
        "mongodb_uri": infra.mongodb_uri,
        "mongodb_database": f"{prefix}_holes",
        "kafka_topic_prefix": f"{prefix}.",
        "kafka_partitions": 2,
        "outbox_poll_interval_s": 0.05,
        "timer_poll_interval_s": 0.05,
        "consumer_backoff_s": 0.05,
        **extra,
    }
    return ServiceSettings(**values)


def note(doc_id: str, seq: int) -> CloudEvent:
    return new_event(
        TicketCancelled(ticket_id=doc_id, reason=str(seq), cancelled_at=datetime.now(UTC)),
        source="/test/holes",
        subject=doc_id,
    )


@pytest.fixture
async def cleanup(infra: Infra) -> AsyncIterator[list[str]]:
    """Database names the test used: dropped after it."""
    names: list[str] = []
    yield names
    client = mongo(infra)
    for name in names:
        await client.drop_database(name)
    await client.close()


# ----------------------------------------------------------------------------------------------- X1


class ProcessDied(Exception):
    """The process running the store dies here (nothing after this write happens)."""


class WritesWatched:
    """A store's collection whose writes go through `_write` (reads pass straight through)."""

    WRITES = ("insert_one", "update_one", "delete_one", "replace_one", "find_one_and_delete")

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if name not in self.WRITES:
            return attr

        async def write(*args: Any, **kwargs: Any) -> Any:
            return await self._write(name, lambda: attr(*args, **kwargs))

        return write

    async def _write(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        return await call()


class DiesAfterRollupsMove(WritesWatched):
    """A collection of a store whose process dies at its first write after a rollup bucket has moved:
    the batch is left half-finished, as a SIGKILL there would leave it."""

    def __init__(self, collection: Any, moved: dict[str, bool], *, rollups: bool) -> None:
        super().__init__(collection)
        self._moved = moved
        self._rollups = rollups

    async def _write(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        if self._moved["rollups"]:
            raise ProcessDied(f"{name} on {self._collection.name}")
        result = await call()
        if self._rollups and name == "update_one":
            self._moved["rollups"] = True
        return result


def ticket_created(ticket_id: str, at: datetime) -> CloudEvent:
    data = TicketCreated(
        ticket_id=ticket_id,
        channel=Channel.WEB,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P3,
        customer_id=f"C-{ticket_id}",
        region_code="310000",
        device_type="fridge",
        created_at=at,
        rules_version="test",
    )
    return new_event(data, source="/test/holes", subject=ticket_id)


async def test_x1_a_rollup_delta_replayed_after_600_newer_ones_on_its_buckets_is_counted_once(
    infra: Infra, cleanup: list[str]
) -> None:
    client = mongo(infra)
    db = client[unique("x1_")]
    cleanup.append(db.name)
    zone = ZoneInfo("UTC")
    day = date(2026, 11, 24)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

    # A process records ticket T0 and dies right after the first rollup bucket moved: the batch is left
    # registered with the delta still pending, some buckets already counted (and marked) and some not.
    dying = MetricsStore(db)
    moved = {"rollups": False}
    dying.facts = DiesAfterRollupsMove(dying.facts, moved, rollups=False)  # type: ignore[assignment]
    dying.rollups = DiesAfterRollupsMove(dying.rollups, moved, rollups=True)  # type: ignore[assignment]
    dying.batches = DiesAfterRollupsMove(dying.batches, moved, rollups=False)  # type: ignore[assignment]
    first = ticket_created("T0", at)
    with pytest.raises(ProcessDied):
        await Recording(dying, zone).record([first])
    assert moved["rollups"]

    # Its successor records 600 newer tickets on the same hot buckets (the day, `current`, `alltime`),
    # one batch each and many at once, before the crashed batch is finished ...
    store = MetricsStore(db)
    recording = Recording(store, zone)
    gate = asyncio.Semaphore(16)

    async def record(event: CloudEvent) -> None:
        async with gate:
            await recording.record([event])

    await asyncio.gather(*(record(ticket_created(f"T{i}", at)) for i in range(1, 601)))
    # ... then finishes it (the start-up / periodic recovery), and T0's event is delivered once more.
    assert await store.recover_batches(min_age_s=0) == 1
    await recording.record([first])

    [(stored_day, by_value)] = await store.day_rollups("all", day, day)
    assert stored_day == day
    assert by_value["all"]["created"] == 601
    assert (await store.current("all"))["all"]["open"] == 601
    assert sum((await store.alltime())["created"].values()) == 601
    assert await db["batches"].count_documents({}) == 0
    await client.close()


async def test_x1_a_finished_batch_leaves_its_delta_until_the_next_write_and_a_crashed_one_until_recovery(
    infra: Infra, cleanup: list[str]
) -> None:
    """Finishing a batch writes no facts document: a subject's next write clears the pending delta of
    a finished batch, whichever process finished it, and keeps the one of a batch a crash left registered,
    which recovery then counts once."""
    client = mongo(infra)
    db = client[unique("x1p_")]
    cleanup.append(db.name)
    zone = ZoneInfo("UTC")
    day = date(2026, 11, 24)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

    async def pending_of(subject: str) -> set[str]:
        doc = await db["facts"].find_one({"_id": subject})
        assert doc is not None
        return set(doc.get("pending") or {})

    store = MetricsStore(db)
    recording = Recording(store, zone)
    facts_updates: list[str] = []
    store.facts = WritesCounted(store.facts, facts_updates)  # type: ignore[assignment]
    await recording.record([ticket_created("T1", at), ticket_created("T2", at)])
    assert facts_updates == ["insert_one", "insert_one"]  # one write per subject, none to finish
    [first_batch] = await pending_of("T1")
    assert await pending_of("T2") == {first_batch}

    # T2's next event is recorded by a process that dies once the first rollup bucket moved.
    dying = MetricsStore(db)
    moved = {"rollups": False}
    dying.facts = DiesAfterRollupsMove(dying.facts, moved, rollups=False)  # type: ignore[assignment]
    dying.rollups = DiesAfterRollupsMove(dying.rollups, moved, rollups=True)  # type: ignore[assignment]
    dying.batches = DiesAfterRollupsMove(dying.batches, moved, rollups=False)  # type: ignore[assignment]
    cancel = new_event(
        TicketCancelled(ticket_id="T2", reason="test", cancelled_at=at + timedelta(minutes=5)),
        source="/test/holes",
        subject="T2",
    )
    with pytest.raises(ProcessDied):
        await Recording(dying, zone).record([cancel])
    [crashed] = await pending_of("T2") - {first_batch}  # the dying write cleared nothing it did not know

    # A new process (it remembers no batch) records a later event of each: T1's finished entry goes
    # (its batch is no longer registered), T2's crashed one stays, and each write is a single update.
    facts_updates.clear()
    store = MetricsStore(db)
    later = Recording(store, zone)
    store.facts = WritesCounted(store.facts, facts_updates)  # type: ignore[assignment]
    assigned = work_order_assigned("T1", grid_id="g", occurred_at=at + timedelta(minutes=1))
    await later.record([assigned, ticket_created("T3", at), note("T2", 1)])
    assert sorted(facts_updates) == ["insert_one", "update_one", "update_one"]
    [second_batch] = await pending_of("T1")
    assert second_batch != first_batch
    assert crashed in await pending_of("T2")

    # A batch this process is still finishing (another topic's, at the same time) is not looked up.
    await db["batches"].insert_one({"_id": "in-flight-here", "subjects": [], "at": at})
    store._open.add("in-flight-here")
    assert await store._finished_of(["in-flight-here"]) == []
    await db["batches"].delete_one({"_id": "in-flight-here"})
    assert await store._finished_of(["in-flight-here"]) == []  # known open here: not read at all

    assert await store.recover_batches(min_age_s=0) == 1
    await later.record([note("T2", 2)])
    assert crashed not in await pending_of("T2")  # the recovered batch's entry went with T2's next write
    [(_, by_value)] = await store.day_rollups("all", day, day)
    assert by_value["all"]["created"] == 3
    assert by_value["all"]["cancelled"] == 1
    assert by_value["all"]["assigned"] == 1
    assert await db["batches"].count_documents({}) == 0
    await client.close()


class DiesAtWrite(WritesWatched):
    """A collection of a store whose process dies at a given write: the collections sharing `budget`
    together allow `budget["left"]` writes, and the next one raises."""

    def __init__(self, collection: Any, budget: dict[str, int]) -> None:
        super().__init__(collection)
        self._budget = budget

    async def _write(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        if self._budget["left"] <= 0:
            raise ProcessDied(f"{name} on {self._collection.name}")
        self._budget["left"] -= 1
        return await call()


async def test_x1_a_batch_killed_at_any_write_of_its_finish_is_counted_once_and_leaves_no_marker(
    infra: Infra, cleanup: list[str]
) -> None:
    """The process recording a batch dies after each of its batch and rollup writes in turn (registering
    the batch, moving each bucket, clearing up); a successor then recovers, the batch's event is delivered
    again, and every bucket has counted each ticket once. Once that successor has started, no bucket
    carries the marker of a batch no process still owes."""
    client = mongo(infra)
    zone = ZoneInfo("UTC")
    at = datetime.now(UTC).replace(microsecond=0)
    day = at.date()
    t1 = ticket_created("T1", at)

    async def scenario(name: str, writes: int) -> tuple[Any, bool, int]:
        db = client[unique(name)]
        cleanup.append(db.name)
        await Recording(MetricsStore(db), zone).record([ticket_created("T0", at)])  # the buckets exist
        budget = {"left": writes}
        dying = MetricsStore(db)
        dying.rollups = DiesAtWrite(dying.rollups, budget)  # type: ignore[assignment]
        dying.batches = DiesAtWrite(dying.batches, budget)  # type: ignore[assignment]
        died = False
        try:
            await Recording(dying, zone).record([t1])
        except ProcessDied:
            died = True
        return db, died, budget["left"]

    # A batch that does not die: how many batch and rollup writes recording one ticket takes.
    _, died, left = await scenario("x1k_", 10**6)
    assert not died
    total = 10**6 - left
    assert total >= 4  # registered, three buckets moved (the day, `current`, `alltime`), removed

    for writes in range(1, total + 1):
        db, died, _ = await scenario(f"x1k{writes}_", writes)
        assert died == (writes < total)
        successor = MetricsStore(db)
        recording = Recording(successor, zone)
        await successor.recover_batches(min_age_s=0)
        await recording.record([t1])  # Kafka delivers the batch once more
        await recording.record([ticket_created("T2", at)])
        [(_, by_value)] = await successor.day_rollups("all", day, day)
        assert by_value["all"]["created"] == 3, f"died after {writes} of {total} writes"
        assert (await successor.current("all"))["all"]["open"] == 3, f"died after {writes} writes"
        assert sum((await successor.alltime())["created"].values()) == 3, f"died after {writes} writes"
        assert await db["batches"].count_documents({}) == 0
        # What the successor finished is its own to clear with the next move; nothing else is left.
        owed = successor._markers.owed()
        async for bucket in db["rollups"].find({}, {"applied": 1}):
            assert set(bucket.get("applied") or {}) <= owed, f"{bucket['_id']}, died after {writes} writes"
    await client.close()


class WritesCounted(WritesWatched):
    """A collection that records the name of every write made through it."""

    def __init__(self, collection: Any, writes: list[str]) -> None:
        super().__init__(collection)
        self._writes = writes

    async def _write(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        self._writes.append(name)
        return await call()


# ----------------------------------------------------------------------------------------------- X2


async def test_x2_two_relay_replicas_on_one_collection_lose_nothing_and_duplicate_only_across_replicas(
    infra: Infra, cleanup: list[str]
) -> None:
    settings = settings_for(infra)
    cleanup.append(settings.database_name)
    client = mongo(infra)
    db = client[settings.database_name]
    col = db["orders"]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    await ensure_topics(settings, [Topic.TICKETS])
    brokers = {"a": make_broker(settings), "b": make_broker(settings)}  # one producer per replica
    for broker in brokers.values():
        await broker.start()
    copies: Counter[tuple[str, str]] = Counter()  # (replica, ce_id) -> copies it published

    def publisher(replica: str) -> Callable[[str, CloudEvent], Awaitable[None]]:
        async def publish(topic: str, event: CloudEvent) -> None:
            await publish_event(brokers[replica], topic, event)
            copies[(replica, event.id)] += 1

        return publish

    relays = {
        name: OutboxRelay(
            db,
            ["orders"],
            publisher(name),
            topic_of=settings.topic,
            poll_interval_s=0.05,
            sweep_interval_s=sweep,
        )
        for name, sweep in (("a", 0.3), ("b", 0.5))
    }
    stop = asyncio.Event()
    running = [asyncio.create_task(r.run(stop)) for r in relays.values()]
    written: dict[str, list[CloudEvent]] = {}
    rng = random.Random(10)

    async def writer(doc_id: str) -> None:
        events = [note(doc_id, seq) for seq in range(6)]
        written[doc_id] = events
        await col.insert_one(new_with_events({"_id": doc_id}, Topic.TICKETS, events[:1]))
        for seq, event in enumerate(events):
            if seq:
                await col.update_one(
                    {"_id": doc_id}, with_events({"$set": {"v": seq}}, Topic.TICKETS, [event])
                )
            for relay in relays.values():  # both replicas race for every write
                relay.notify("orders", doc_id)
            await asyncio.sleep(rng.uniform(0, 0.02))

    async def shutdown_drains() -> None:
        """What a stopping replica does beside its run loop: drain the same documents at once."""
        while not stop.is_set():
            await asyncio.gather(*(r.drain(sweep=False) for r in relays.values()), return_exceptions=True)
            await asyncio.sleep(0.01)

    draining = asyncio.create_task(shutdown_drains())
    await asyncio.gather(*(writer(f"d{d}") for d in range(24)))
    await wait_until("every outbox emptied", lambda: _all_published(relays["a"]), timeout_s=60)
    stop.set()
    await asyncio.gather(*running, draining)
    for broker in brokers.values():
        await broker.stop()

    records = await read_to_end(infra, settings.topic(Topic.TICKETS))
    on_topic = Counter(headers_of(r)["ce_id"] for r in records)
    every_id = {e.id for events in written.values() for e in events}
    assert set(on_topic) == every_id, f"lost: {len(every_id - set(on_topic))} of {len(every_id)}"
    # Duplicates only across replicas (documented): one copy per replica at most, never two from one.
    assert max(copies.values()) == 1, [k for k, n in copies.items() if n > 1][:5]
    assert max(on_topic.values()) <= len(relays)
    assert {replica for replica, _ in copies} == {"a", "b"}, "both replicas should have published"
    for doc_id, events in written.items():  # the first copy of each event is in the order written
        first_copies = list(dict.fromkeys(data_of(r)["reason"] for r in records if r.key == doc_id.encode()))
        assert first_copies == [str(seq) for seq in range(len(events))], (doc_id, first_copies)
    assert await col.count_documents({"outbox.0": {"$exists": True}}) == 0
    await client.close()


async def _all_published(relay: OutboxRelay) -> bool:
    return await relay.pending() == 0


# ----------------------------------------------------------------------------------------------- S2


async def test_s2_a_producer_dead_for_good_is_recreated_and_readyz_is_red_while_the_outbox_stalls(
    infra: Infra, cleanup: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(infra, kafka_publish_timeout_s=1.5)
    cleanup.append(settings.database_name)
    monkeypatch.setattr(runtime_module, "OUTBOX_STALL_S", 0.5)  # 60 s in production
    runtime = ServiceRuntime(settings, RuntimeSpec(produces=[Topic.TICKETS], outbox_collections=["notes"]))
    await runtime.start()
    topic = settings.topic(Topic.TICKETS)
    notes = runtime.db["notes"]

    async def write(doc_id: str) -> CloudEvent:
        event = note(doc_id, 0)
        await notes.insert_one(new_with_events({"_id": doc_id}, Topic.TICKETS, [event]))
        runtime.relay.notify("notes", doc_id)
        return event

    try:
        before = await write("n0")
        await wait_until("n0 published", lambda: _on_topic(infra, topic, {before.id}))
        assert (await runtime.readiness())["outbox"] is True

        # aiokafka's idempotent producer after OutOfOrderSequenceNumber: every send fails, for good.
        dead = runtime.broker.config.producer._producer.producer  # type: ignore[attr-defined]

        async def dead_send(*args: Any, **kwargs: Any) -> Any:
            raise OutOfOrderSequenceNumber("the broker received an out of order sequence number")

        dead.send = dead_send
        renewals = PRODUCER_RENEWALS._value.get()
        pending = [await write(f"n{i}") for i in range(1, 6)]

        async def readyz_red() -> bool:
            return (await runtime.readiness())["outbox"] is False

        await wait_until("/readyz red for the stalled outbox", readyz_red, timeout_s=10, interval_s=0.05)
        ids = {e.id for e in pending}
        await wait_until(
            "the outbox drained through a new producer", lambda: _on_topic(infra, topic, ids), 30
        )
        await wait_until("nothing left in the outbox", lambda: _all_published(runtime.relay))
        assert PRODUCER_RENEWALS._value.get() > renewals
        assert runtime.broker.config.producer._producer.producer is not dead  # type: ignore[attr-defined]
        checks = await runtime.readiness()
        assert checks["outbox"] is True and all(checks.values()), checks
    finally:
        await runtime.stop()


async def _on_topic(infra: Infra, topic: str, ids: set[str]) -> bool:
    return ids <= {headers_of(r)["ce_id"] for r in await read_to_end(infra, topic)}


# ----------------------------------------------------------------------------------------------- S3


async def test_s3_a_hung_handler_is_cut_by_its_timeout_and_retried_in_its_group_never_dead_lettered(
    infra: Infra, cleanup: list[str]
) -> None:
    # Two hung attempts with CONSUMER_MAX_ATTEMPTS=2: a timeout counted as an ordinary error would park it.
    settings = settings_for(
        infra, consumer_handler_timeout_s=1.0, consumer_max_attempts=2, consumer_retry_budget_s=30
    )
    cleanup.append(settings.database_name)
    topic = settings.topic(Topic.TICKETS)
    await ensure_topics(settings, [Topic.TICKETS])
    broker = make_broker(settings)
    attempts: Counter[str] = Counter()
    applied: list[str] = []

    async def handle(event: CloudEvent) -> None:
        attempts[event.subject] += 1
        if event.subject == "hung" and attempts["hung"] <= 2:
            await asyncio.Event().wait()  # hangs until the timeout cancels it
        applied.append(event.subject)

    subscribe(broker, settings, [Topic.TICKETS], handle)
    await broker.start()
    group = settings.topic("aftersales-holes")
    try:
        await publish_event(broker, topic, note("warm-up", 0))
        await wait_until("the consumer took its first batch", lambda: _returns("warm-up" in applied))
        [member] = await wait_until("one stable member", lambda: _members(infra, group))

        for subject in ("hung", "a", "b"):
            await publish_event(broker, topic, note(subject, 0))
        await wait_until("every event applied", lambda: _returns({"hung", "a", "b"} <= set(applied)), 30)
        assert attempts["hung"] == 3 and Counter(applied) == {"warm-up": 1, "hung": 1, "a": 1, "b": 1}
        await wait_until("offsets committed to the end", lambda: _committed_to_end(infra, group, topic))
        assert await _members(infra, group) == [member]  # never evicted, never rejoined
        assert await read_to_end(infra, dead_letter_topic(topic)) == []
    finally:
        await broker.stop()


async def test_s3_readyz_is_red_while_a_consumer_stops_polling_and_green_while_it_only_idles(
    infra: Infra, cleanup: list[str]
) -> None:
    # A consumer idle past its max poll interval (3 s here, 300 s by default) is stuck; Kafka takes its
    # partitions away then. The handler below ignores its cancellation, as a call stuck in a driver would.
    settings = settings_for(
        infra,
        consumer_handler_timeout_s=0.5,
        consumer_retry_budget_s=1.0,
        consumer_max_poll_interval_s=3.0,
    )
    cleanup.append(settings.database_name)
    runtime = ServiceRuntime(settings, RuntimeSpec(consumes=[Topic.TICKETS], produces=[Topic.TICKETS]))
    release = asyncio.Event()
    applied: list[str] = []

    async def handle(event: CloudEvent) -> None:
        while event.subject == "stuck" and not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        applied.append(event.subject)

    subscribe(runtime.broker, settings, [Topic.TICKETS], handle)
    await runtime.start()
    topic = settings.topic(Topic.TICKETS)

    async def consumers_ready(ready: bool) -> bool:
        return (await runtime.readiness())["consumers"] is ready

    try:
        await publish_event(runtime.broker, topic, note("warm-up", 0))
        await wait_until("the consumer took its first batch", lambda: _returns("warm-up" in applied), 30)
        await asyncio.sleep(4.0)  # longer than the max poll interval with nothing to consume: idle, not stuck
        assert await consumers_ready(True)
        await publish_event(runtime.broker, topic, note("stuck", 0))
        await wait_until(
            "/readyz red for the consumer that stopped polling", lambda: consumers_ready(False), 20
        )
        release.set()
        await wait_until("the stuck event applied", lambda: _returns("stuck" in applied), 20)
        await wait_until("/readyz green once it polls again", lambda: consumers_ready(True), 20)
    finally:
        release.set()
        await runtime.stop()


async def test_s3_a_batch_handed_back_is_polled_again_only_from_what_did_not_finish(
    infra: Infra, cleanup: list[str]
) -> None:
    # One ticket's handler stays overloaded past two retry budgets; 40 others share its poll.
    settings = settings_for(infra, consumer_retry_budget_s=1.0, consumer_handler_timeout_s=5)
    cleanup.append(settings.database_name)
    topic = settings.topic(Topic.TICKETS)
    await ensure_topics(settings, [Topic.TICKETS])
    broker = make_broker(settings)
    applied: Counter[str] = Counter()
    stuck_until = asyncio.get_running_loop().time() + 1e9

    async def handle(event: CloudEvent) -> None:
        if event.subject == "stuck" and asyncio.get_running_loop().time() < stuck_until:
            raise RetryLater("the database is overloaded")
        applied[f"{event.subject}/{event.data['reason']}"] += 1

    subscribe(broker, settings, [Topic.TICKETS], handle)
    publisher = make_broker(settings)
    await publisher.start()
    try:  # all published before the consumer starts: its first poll holds them all
        for seq in range(4):
            for ticket in ("stuck", *(f"t{i}" for i in range(10))):
                await publish_event(publisher, topic, note(ticket, seq))
    finally:
        await publisher.stop()
    handbacks = CONSUMER_HANDBACKS.labels(topic)._value.get()
    group = settings.topic("aftersales-holes")
    await broker.start()
    try:
        await wait_until(
            "two hand-backs",
            lambda: _returns(CONSUMER_HANDBACKS.labels(topic)._value.get() >= handbacks + 2),
            30,
        )
        assert "stuck/0" not in applied and len(applied) == 40  # the others all finished meanwhile
        stuck_until = 0.0
        await wait_until("every event applied", lambda: _returns(len(applied) == 44), 30)
        assert set(applied.values()) == {1}  # none redone by a re-poll
        await wait_until("offsets committed to the end", lambda: _committed_to_end(infra, group, topic))
        assert await read_to_end(infra, dead_letter_topic(topic)) == []
    finally:
        await broker.stop()


async def _returns(value: bool) -> bool:
    return value


async def _members(infra: Infra, group: str) -> list[str] | None:
    """Return the member ids of a stable consumer group (None while it rebalances)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    state, members = described[2], described[5]
    return [m[0] for m in members] if state == "Stable" and members else None


async def _committed_to_end(infra: Infra, group: str, topic: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    partitions = await topic_partitions(infra.kafka, lambda name: name == topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka, group_id=None)
    await consumer.start()
    try:
        end = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return bool(partitions) and all(
        end[tp] == 0 or (tp in committed and committed[tp].offset == end[tp]) for tp in partitions
    )


async def test_s3_a_hung_timer_handler_holds_its_lease_until_cut_so_the_timer_fires_once(
    infra: Infra, cleanup: list[str]
) -> None:
    client = mongo(infra)
    db = client[unique("timers_")]
    cleanup.append(db.name)
    await ensure_indexes(db, TIMER_INDEXES)
    lease_s = 2.0  # renewed every 2/3 s while the handler runs; the handler is cut after 3 s
    hung = DurableTimers(db, lease_s=lease_s, handler_timeout_s=1.5 * lease_s)
    other = DurableTimers(db, lease_s=lease_s)
    await hung.schedule("breach-1", "sla", datetime.now(UTC) - timedelta(seconds=1))
    effects: list[tuple[str, int]] = []  # (replica, fencing version) of every completed firing

    hanging = asyncio.Event()

    async def hangs(timer: Timer) -> None:
        hanging.set()
        await asyncio.sleep(3 * lease_s)  # far past the lease
        effects.append(("hung", timer.version))

    async def fires(timer: Timer) -> None:
        effects.append(("other", timer.version))

    # The hung replica claims the timer and hangs past its lease (renewed meanwhile); the other keeps
    # looking for due timers, and may take it only once the hung call was cut and handed it back.
    fired = asyncio.create_task(hung.fire_due(hangs))
    await asyncio.wait_for(hanging.wait(), timeout=10)
    deadline = asyncio.get_running_loop().time() + 4 * lease_s
    while asyncio.get_running_loop().time() < deadline:
        await other.refresh()
        await other.fire_due(fires)
        await asyncio.sleep(0.1)
    assert await fired == 0  # the hung call was cut (and the timer handed back), not completed
    # Exactly one firing took effect, by the other replica after the hung one was cut; the hung handler's
    # effect never happened, even long after it would have ended.
    assert [replica for replica, _ in effects] == ["other"], effects
    assert await other.get("breach-1") is None
    await client.close()


# ----------------------------------------------------------------------------------------------- S5


async def test_s5_shutdown_stops_timers_finishes_in_flight_work_flushes_it_and_fits_its_grace(
    infra: Infra, cleanup: list[str]
) -> None:
    settings = settings_for(infra, shutdown_grace_s=8.0, consumer_handler_timeout_s=60.0, kafka_partitions=1)
    cleanup.append(settings.database_name)
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(consumes=[Topic.TICKETS], produces=[Topic.ASSIGNMENTS], outbox_collections=["notes"]),
    )
    started: set[str] = set()
    finished: list[str] = []
    release = asyncio.Event()
    fired: list[str] = []

    async def handle(event: CloudEvent) -> None:
        started.add(event.subject)
        if event.subject == "hung":
            await release.wait()  # never ends by itself (the test lets it go once the shutdown is over)
            return
        await asyncio.sleep(1.5)  # in flight when the shutdown begins
        reply = note(f"reply-{event.subject}", 0)
        await runtime.db["notes"].insert_one(
            new_with_events({"_id": event.subject}, Topic.ASSIGNMENTS, [reply])
        )
        runtime.relay.notify("notes", event.subject)
        finished.append(reply.id)

    async def on_timer(timer: Timer) -> None:
        fired.append(timer.id)

    # Both events wait on the topic before the consumer starts, so its first poll takes them together.
    await ensure_topics(settings, [Topic.TICKETS, Topic.ASSIGNMENTS])
    sender = make_broker(settings)
    await sender.start()
    for subject in ("slow", "hung"):
        await publish_event(sender, settings.topic(Topic.TICKETS), note(subject, 0))
    await sender.stop()
    subscribe(runtime.broker, settings, [Topic.TICKETS], handle)
    runtime.on_timer("probe", on_timer)
    await runtime.start()
    loop = asyncio.get_running_loop()
    elapsed: float | None = None
    try:
        await wait_until("both handlers in flight", lambda: _returns(started == {"slow", "hung"}), 30)
        # due while the consumers finish: a timer must not fire once the shutdown has begun
        await runtime.timers.schedule("during-stop", "probe", datetime.now(UTC) + timedelta(seconds=0.3))
        stopping_at = loop.time()
        await runtime.stop()
        elapsed = loop.time() - stopping_at
    finally:
        if elapsed is None:
            await runtime.stop()
        release.set()  # the hung handler's consumer was left behind by the shutdown: close it
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runtime.broker.stop(), timeout=20)
    assert elapsed <= settings.shutdown_grace_s, f"shutdown took {elapsed:.1f}s"
    assert fired == []
    assert len(finished) == 1  # the slow handler finished; the hung one was cut
    # what the finished handler wrote was published before the producer closed
    assert await _on_topic(infra, settings.topic(Topic.ASSIGNMENTS), set(finished))
    client = mongo(infra)
    timer = await client[settings.database_name]["timers"].find_one({"_id": "during-stop"})
    assert timer is not None and timer["state"] == "pending"  # it fires after the restart instead
    await client.close()


async def test_s5_once_the_shutdown_began_no_further_timer_is_claimed(
    infra: Infra, cleanup: list[str]
) -> None:
    """A sweep in the middle of a large due batch when SIGTERM comes: the timers in flight finish, no other
    one is claimed (they stay pending, for the next start or another replica)."""
    client = mongo(infra)
    db = client[unique("timers_")]
    cleanup.append(db.name)
    await ensure_indexes(db, TIMER_INDEXES)
    timers = DurableTimers(db, poll_interval_s=0.05)
    past = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(48):  # three rounds of FIRE_CONCURRENCY
        await timers.schedule(f"t-{i}", "sla", past)
    in_flight: set[str] = set()
    fired: list[str] = []
    first_round = asyncio.Event()

    async def slow(timer: Timer) -> None:
        in_flight.add(timer.id)
        if len(in_flight) >= 16:
            first_round.set()
        await asyncio.sleep(0.5)
        fired.append(timer.id)

    stop = asyncio.Event()
    sweeping = asyncio.create_task(timers.run(slow, stop))
    await asyncio.wait_for(first_round.wait(), timeout=30)
    stop.set()
    await asyncio.wait_for(sweeping, timeout=30)
    assert len(fired) == 16 and set(fired) == in_flight  # only the first round, which had begun
    assert await db["timers"].count_documents({"state": "pending"}) == 48 - 16
    await client.close()
