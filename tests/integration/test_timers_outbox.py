"""Durable timers and the outbox relay on the real MongoDB-wire server, with competing replicas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from harness import Infra, mongo, unique, wait_until
from pymongo import AsyncMongoClient
from pymongo.errors import NetworkTimeout

from aftersales.shared import mongo as mongo_module
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.mongo import ensure_indexes
from aftersales.shared.outbox import PENDING_QUERY, OutboxRelay, new_with_events, outbox_indexes, with_events
from aftersales.shared.timers import TIMER_INDEXES, DurableTimers, Timer


async def test_two_sweepers_fire_each_due_timer_exactly_once(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("timers_")]
    await ensure_indexes(db, TIMER_INDEXES)
    replica_a, replica_b = DurableTimers(db), DurableTimers(db)
    now = datetime.now(UTC)
    for i in range(120):
        await replica_a.schedule(f"t-{i}", "sla", now - timedelta(seconds=i), {"n": i})
    await replica_a.schedule("future", "sla", now + timedelta(hours=1))
    fired: Counter[str] = Counter()

    async def handler(timer: Timer) -> None:
        fired[timer.id] += 1
        await asyncio.sleep(0)  # let the other replica interleave

    assert await replica_b.refresh() == 121  # b learns of the timers a scheduled, as after a restart
    counts = await asyncio.gather(replica_a.fire_due(handler), replica_b.fire_due(handler))
    assert sum(counts) == 120
    assert all(counts), "both replicas should have won some claims"
    assert set(fired) == {f"t-{i}" for i in range(120)}
    assert set(fired.values()) == {1}
    assert (await replica_a.get("future"))["state"] == "pending"
    await client.drop_database(db.name)
    await client.close()


async def test_a_timer_whose_replica_died_is_fired_after_its_lease(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("timers_")]
    await ensure_indexes(db, TIMER_INDEXES)
    lease = timedelta(seconds=30)
    crashed = DurableTimers(db, lease_s=lease.total_seconds())
    survivor = DurableTimers(db, lease_s=lease.total_seconds())
    claimed_at = datetime.now(UTC)
    await crashed.schedule("breach-1", "sla", claimed_at - timedelta(seconds=1))
    claimed = await crashed.claim("breach-1", claimed_at)  # ... and the replica dies before firing it
    assert claimed is not None and claimed.id == "breach-1"
    fired: list[str] = []

    async def handler(timer: Timer) -> None:
        fired.append(timer.id)

    # Instants are passed in, not slept to: the lease's edge is exact and no machine is too slow for it.
    await survivor.refresh()
    assert await survivor.fire_due(handler, now=claimed_at + lease - timedelta(milliseconds=1)) == 0
    assert fired == []  # still leased by the dead replica
    after_lease = claimed_at + lease + timedelta(milliseconds=1)
    assert await survivor.fire_due(handler, now=after_lease) == 1
    assert fired == ["breach-1"]
    assert await survivor.fire_due(handler, now=after_lease) == 0
    assert await survivor.get("breach-1") is None  # fired timers are deleted: the collection stays small

    async def late_failure(timer: Timer) -> None:
        raise RuntimeError("the replica that lost its lease fails late")

    # The replica that lost its lease fails late: its fenced write names a version that is gone, so it
    # cannot bring the fired timer back.
    assert await crashed._fire(late_failure, claimed) is False
    assert await survivor.get("breach-1") is None
    await client.drop_database(db.name)
    await client.close()


async def test_failing_handler_is_retried_and_rescheduling_moves_only_pending_timers(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("timers_")]
    await ensure_indexes(db, TIMER_INDEXES)
    timers = DurableTimers(db)
    past = datetime.now(UTC) - timedelta(seconds=5)
    await timers.schedule("flaky", "followup", past, group="wo-1")
    await timers.schedule("other", "followup", past + timedelta(days=1), group="wo-1")

    async def failing(timer: Timer) -> None:
        raise RuntimeError("downstream unavailable")

    assert await timers.fire_due(failing) == 0
    doc = await timers.get("flaky")
    assert doc is not None and doc["state"] == "pending" and "downstream unavailable" in doc["last_error"]
    assert doc["due_at"] > datetime.now(UTC)  # backed off, not hot-looping
    assert await timers.cancel("flaky") and await timers.cancel("other")
    assert not await timers.cancel("other")  # cancelled timers are gone
    assert await timers.fire_due(failing, now=datetime.now(UTC) + timedelta(days=2)) == 0
    await timers.schedule("done-one", "x", past)

    async def ok(timer: Timer) -> None:
        return None

    assert await timers.fire_due(ok) == 1
    assert await timers.get("done-one") is None
    assert await db["timers"].count_documents({}) == 0  # nothing accumulates: no claims, no done timers
    await client.drop_database(db.name)
    await client.close()


def event(doc_id: str, seq: int) -> CloudEvent:
    return new_event(
        TicketCancelled(ticket_id=doc_id, reason=str(seq), cancelled_at=datetime.now(UTC)),
        source="/test",
        subject=doc_id,
    )


async def test_a_failed_publish_stays_queued_and_a_crash_after_publishing_only_republishes(
    infra: Infra,
) -> None:
    client = mongo(infra)
    db = client[unique("outbox_")]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    col = db["orders"]
    first, second = event("d0", 0), event("d1", 0)
    await col.insert_many(
        [new_with_events({"_id": d}, Topic.TICKETS, [e]) for d, e in (("d0", first), ("d1", second))]
    )
    broker_up = False
    published: list[str] = []

    async def publish(topic: str, ev: CloudEvent) -> None:
        if not broker_up:
            raise KafkaConnectionError("broker unavailable")
        published.append(ev.id)

    # The broker is down: the event stays in the document and the document stays queued in the relay,
    # so its next pass publishes it without waiting for a sweep.
    relay = OutboxRelay(db, ["orders"], publish)
    relay.notify("orders", "d0")
    with pytest.raises(KafkaConnectionError):
        await relay.drain(sweep=False)
    assert published == [] and await relay.pending() == 2
    broker_up = True
    assert await relay.drain(sweep=False) == 1
    assert published == [first.id]

    # A relay dies after the broker took the event but before removing it: the next one publishes it
    # again (consumers dedupe by ce_id); it is never lost.
    async def publish_then_die(topic: str, ev: CloudEvent) -> None:
        published.append(ev.id)
        raise RuntimeError("the process died before removing what it published")

    with pytest.raises(RuntimeError, match="died"):
        await OutboxRelay(db, ["orders"], publish_then_die).relay_document("orders", "d1")
    assert await OutboxRelay(db, ["orders"], publish).drain() == 1  # the start-up sweep of a new process
    assert published == [first.id, second.id, second.id]
    assert await relay.pending() == 0
    await client.drop_database(db.name)
    await client.close()


async def test_competing_relays_publish_every_event_in_order_per_document(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("outbox_")]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    col = db["orders"]

    for d in range(20):
        await col.insert_one(new_with_events({"_id": f"d{d}"}, Topic.TICKETS, [event(f"d{d}", 0)]))
        for seq in range(1, 5):
            await col.update_one(
                {"_id": f"d{d}"}, with_events({"$set": {"v": seq}}, Topic.TICKETS, [event(f"d{d}", seq)])
            )
    published: list[tuple[str, str]] = []

    async def publish(topic: str, ev: CloudEvent) -> None:
        published.append((ev.subject, ev.data["reason"]))
        await asyncio.sleep(0)

    relays = [OutboxRelay(db, ["orders"], publish) for _ in range(3)]
    await asyncio.gather(*(r.drain() for r in relays))
    # Competing replicas may publish an event twice (consumers dedupe by ce_id), but never lose one,
    # and the first copy of every event arrives in the order it was written.
    assert len(set(published)) == 100
    for d in range(20):
        first_copies = list(dict.fromkeys(seq for subject, seq in published if subject == f"d{d}"))
        assert first_copies == ["0", "1", "2", "3", "4"]
    assert await relays[0].pending() == 0
    assert await col.count_documents({"outbox.0": {"$exists": True}}) == 0
    # an event appended while a relay publishes is not removed with the ones it published
    await col.update_one({"_id": "d0"}, with_events({"$set": {"v": 9}}, Topic.TICKETS, [event("d0", 9)]))

    async def append_during_publish(topic: str, ev: CloudEvent) -> None:
        published.append((ev.subject, ev.data["reason"]))
        if ev.data["reason"] == "9":
            await col.update_one({"_id": "d0"}, with_events({}, Topic.TICKETS, [event("d0", 10)]))

    racing = OutboxRelay(db, ["orders"], append_during_publish)
    assert await racing.relay_document("orders", "d0") == 1
    assert [e["data"]["reason"] for e in (await col.find_one({"_id": "d0"}))["outbox"]] == ["10"]
    await client.drop_database(db.name)
    await client.close()


class Recorder:
    """A publisher that records each event's subject and signals every arrival."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.arrived = asyncio.Event()

    async def __call__(self, topic: str, ev: CloudEvent) -> None:
        self.subjects.append(ev.subject)
        self.arrived.set()


async def run_relay_until(relay: OutboxRelay, done: asyncio.Event, timeout_s: float) -> None:
    """Run `relay` (register, heartbeats, relaying) until `done` is set or `timeout_s` passed."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        stop.set()
        await task


async def test_a_relay_that_died_is_swept_for_and_a_clean_stop_needs_no_sweep(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("leases_")]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    col = db["orders"]
    publish = Recorder()
    published, arrived = publish.subjects, publish.arrived

    # First relay ever in this database: a start-up sweep is due (data may predate leases) until one
    # went through; the first relay stops before its sweep, the next one sweeps, then stops cleanly.
    first = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    assert await first.leases.register() is True
    await first.release()
    first = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    assert await first.leases.register() is True
    await first.sweep("start-up")
    await first.leases.recovered()
    await first.release()
    # A clean stop left no lease: the next start-up does not sweep, so an event nobody notified (here
    # written behind the relays' back) stays where it is.
    await col.insert_one(new_with_events({"_id": "unnoticed"}, Topic.TICKETS, [event("unnoticed", 0)]))
    calm = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    assert await calm.leases.register() is False
    await col.delete_one({"_id": "unnoticed"})

    # `calm` is killed (its lease stays) after writing an event it never relayed.
    await col.insert_one(new_with_events({"_id": "left"}, Topic.TICKETS, [event("left", 0)]))
    restarted = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    await run_relay_until(restarted, arrived, timeout_s=10)
    assert published == ["left"]  # swept at start-up: the dead relay's lease was there
    assert await restarted.pending() == 0

    # A running relay notices a lease nobody renews any more (a replica killed and not restarted),
    # sweeps for what it left, and forgets the lease.
    arrived.clear()
    survivor = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(survivor.run(stop))
    await asyncio.wait_for(survivor.registered.wait(), 10)
    await asyncio.sleep(0.5)  # past its start-up: what it publishes now, a heartbeat found
    await db["outbox_relays"].insert_one({"_id": "gone", "alive_at": datetime.now(UTC) - timedelta(hours=1)})
    await col.insert_one(new_with_events({"_id": "orphan"}, Topic.TICKETS, [event("orphan", 0)]))
    try:
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        stop.set()
        await running
    assert published == ["left", "orphan"]
    leases = {d["_id"] async for d in db["outbox_relays"].find({})}
    assert "gone" not in leases and survivor.leases.id in leases
    await client.drop_database(db.name)
    await client.close()


async def test_an_unconfirmed_write_makes_its_relay_sweep_a_heartbeat_later(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mongo(infra)
    db = client[unique("doubt_")]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    publish = Recorder()

    relay = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.2)
    await relay.leases.recovered()  # relays held leases here before: its own start-up needs no sweep
    # A write timed out but landed: its caller got an error and never notified the relay.
    await db["orders"].insert_one(new_with_events({"_id": "d"}, Topic.TICKETS, [event("d", 0)]))
    monkeypatch.setattr(mongo_module, "_unconfirmed", mongo_module.unconfirmed_writes() + 1)
    await run_relay_until(relay, publish.arrived, timeout_s=10)
    assert publish.subjects == ["d"]
    await client.drop_database(db.name)
    await client.close()


async def test_timers_only_a_gone_process_knew_of_are_fired_by_a_running_replica(infra: Infra) -> None:
    """No replica scans the pending timers on a clock: a running one looks for them when another process
    stops cleanly (its lease is marked as left) or dies (its lease goes stale), and fires what it finds."""
    client = mongo(infra)
    db = client[unique("handover_")]
    await ensure_indexes(db, TIMER_INDEXES)
    fired: list[str] = []
    arrived = asyncio.Event()

    async def handler(timer: Timer) -> None:
        fired.append(timer.id)
        arrived.set()

    async def ignore(topic: str, ev: CloudEvent) -> None:
        return None

    def replica() -> tuple[OutboxRelay, DurableTimers]:
        relay, timers = OutboxRelay(db, [], ignore, heartbeat_s=0.2), DurableTimers(db, poll_interval_s=0.05)
        relay.on_peer_change(timers.request_refresh)
        return relay, timers

    survivor_relay, survivor_timers = replica()
    stop_survivor = asyncio.Event()
    survivor = [
        asyncio.create_task(survivor_relay.run(stop_survivor)),
        asyncio.create_task(survivor_timers.run(handler, stop_survivor)),
    ]
    await asyncio.wait_for(survivor_relay.registered.wait(), 10)
    try:
        for ending in ("clean stop", "kill"):
            leaving_relay, leaving_timers = replica()
            stop_leaving = asyncio.Event()
            leaving = asyncio.create_task(leaving_relay.run(stop_leaving))  # alive: heartbeats, no timers
            await asyncio.wait_for(leaving_relay.registered.wait(), 10)
            timer_id = f"due-{ending}"
            await leaving_timers.schedule(timer_id, "sla", datetime.now(UTC) + timedelta(milliseconds=300))
            await asyncio.sleep(1.5)  # five heartbeats: the timer is due, but only the leaving one knows it
            assert timer_id not in fired
            if ending == "clean stop":
                stop_leaving.set()
                await leaving
                await leaving_relay.release()
            else:
                leaving.cancel()  # killed: its lease stays until it goes stale
                with contextlib.suppress(asyncio.CancelledError):
                    await leaving
            await asyncio.wait_for(arrived.wait(), 10)
            arrived.clear()
            assert fired[-1] == timer_id

            async def forgotten(gone: str = leaving_relay.leases.id) -> bool:
                return gone not in {d["_id"] async for d in db["outbox_relays"].find({})}

            # seen once, then forgotten (the heartbeat forgets the lease after telling the timers, which may
            # fire first)
            await wait_until("the gone relay's lease forgotten", forgotten, timeout_s=10)
    finally:
        stop_survivor.set()
        await asyncio.gather(*survivor)
    assert fired == ["due-clean stop", "due-kill"]
    await client.drop_database(db.name)
    await client.close()


async def test_a_sweep_longer_than_the_socket_timeout_still_recovers_and_never_holds_up_new_events(
    infra: Infra,
) -> None:
    """A relay killed with events left behind, in a collection large enough that the start-up sweep's
    scan (FerretDB decodes every document) outlasts the client's socket timeout. Before: the sweep timed
    out at every pass, the relay never got past its start-up, and nothing it was notified of was ever
    published (the chaos run's accepted tickets without a created event)."""
    socket_timeout_s = 0.2
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        infra.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000, socketTimeoutMS=200
    )
    admin = mongo(infra)  # the set-up writes with the usual timeouts: a busy server is not what is tested
    name = unique("bigsweep_")
    db, setup_db = client[name], admin[name]
    await ensure_indexes(setup_db, outbox_indexes(["orders"]))
    col = db["orders"]
    filler = "x" * 4000
    for start in range(0, 6000, 1000):
        await setup_db["orders"].insert_many(
            [{"_id": f"old-{n}", "filler": filler} for n in range(start, start + 1000)]
        )
    await setup_db["orders"].insert_one(new_with_events({"_id": "left"}, Topic.TICKETS, [event("left", 0)]))
    await setup_db["outbox_relays"].insert_many(
        [{"_id": "registry"}, {"_id": "killed", "alive_at": datetime.now(UTC) - timedelta(hours=1)}]
    )
    started = time.monotonic()
    with pytest.raises(NetworkTimeout):  # the set-up holds: a plain scan outlasts the socket timeout
        await col.find(PENDING_QUERY, {"_id": 1}).to_list()
    assert time.monotonic() - started >= socket_timeout_s

    publish = Recorder()
    relay = OutboxRelay(db, ["orders"], publish, heartbeat_s=0.5, scan_timeout_s=120)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        fresh = new_with_events({"_id": "fresh"}, Topic.TICKETS, [event("fresh", 0)])
        await setup_db["orders"].insert_one(fresh)
        relay.notify("orders", "fresh")
        await wait_until("both events published", lambda: _both(publish.subjects), timeout_s=60)
        await asyncio.wait_for(relay.registered.wait(), 10)  # the start-up recovery went through
        # Not stalled: a pass may still time out now and then on a busy server (200 ms), but the next
        # one goes through, where before every pass failed for good.
        await wait_until("a relay pass that goes through", lambda: _flowing(relay), timeout_s=30)
    finally:
        stop.set()
        await running
    await client.close()
    await admin.drop_database(name)  # dropping this much outlasts the short socket timeout too
    await admin.close()


async def _flowing(relay: OutboxRelay) -> bool | None:
    return relay.stalled_since is None or None


async def _both(subjects: list[str]) -> bool | None:
    return {"left", "fresh"} <= set(subjects) or None
