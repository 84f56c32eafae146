"""What a relay's heartbeat tells its listeners (the timers, which then look for timers a gone process
scheduled): each process gone once, however it went, and nothing for a lease that left before it
started. In-memory database: the lease logic, not the server, is under test."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from pymongo.errors import NetworkTimeout

from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo_in_memory import InMemoryMongo
from aftersales.shared.outbox import OutboxRelay, new_with_events
from aftersales.shared.testing import ticket_created

LEASES = "outbox_relays"


async def refuse(topic: str, ev: CloudEvent) -> None:
    raise ConnectionError("broker unavailable")


async def test_each_gone_process_is_told_once() -> None:
    db: Any = InMemoryMongo()["svc"]
    relay = OutboxRelay(db, ["orders"], refuse, heartbeat_s=1.0)
    told: list[str] = []
    relay.on_peer_change(told.append)
    now = datetime.now(UTC)
    leases = db[LEASES]
    await leases.insert_many(
        [
            {"_id": "alive", "alive_at": now},
            {
                "_id": "left-long-ago",
                "alive_at": now - timedelta(hours=1),
                "left_at": now - timedelta(hours=1),
            },
        ]
    )
    await relay._beat(0.0)
    assert told == []  # a peer alive, and one that left before this relay started: its scan saw that

    await leases.delete_one({"_id": "alive"})  # a relay of an older version deletes its lease on stop
    await relay._beat(1.0)
    assert told == ["relay left"]

    # A killed peer, while the sweep for it fails (the broker is down): told once, not at every beat.
    await leases.insert_one({"_id": "killed", "alive_at": now - timedelta(hours=1)})
    await db["orders"].insert_one(new_with_events({"_id": "d"}, Topic.TICKETS, [ticket_created("T1")]))
    for beat in (2.0, 3.0, 4.0):
        try:
            await relay._beat(beat)
        except ConnectionError:
            pass
    assert told == ["relay left", "dead relay"]

    await leases.insert_one({"_id": "stopped", "alive_at": now, "left_at": datetime.now(UTC)})
    try:
        await relay._beat(5.0)
    except ConnectionError:
        pass
    assert told == ["relay left", "dead relay", "relay left"]


class Unscannable:
    """A collection whose scans (`find` with a filter) time out; reads by `_id` answer."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        if name == "find":
            raise NetworkTimeout("timed out (configured timeouts: socketTimeoutMS: 10000.0ms)")
        return getattr(self._collection, name)


async def test_a_start_up_sweep_that_keeps_failing_does_not_hold_up_notified_events() -> None:
    """Before, the start-up sweep ran in the relay's only loop: while it failed, nothing was published."""
    real: Any = InMemoryMongo()["svc"]
    await real[LEASES].insert_many(
        [{"_id": "registry"}, {"_id": "killed", "alive_at": datetime.now(UTC) - timedelta(hours=1)}]
    )
    db = {"orders": Unscannable(real["orders"]), LEASES: real[LEASES]}
    published: list[str] = []

    async def publish(topic: str, ev: CloudEvent) -> None:
        published.append(ev.subject)

    relay = OutboxRelay(cast(Any, db), ["orders"], publish, poll_interval_s=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:
        await real["orders"].insert_one(new_with_events({"_id": "T1"}, Topic.TICKETS, [ticket_created("T1")]))
        relay.notify("orders", "T1")
        for _ in range(100):
            if published and relay.stalled_since is not None:
                break
            await asyncio.sleep(0.05)
        while_running = list(published)  # (a relay that stops publishes what is queued, in any case)
    finally:
        stop.set()
        await running
    assert while_running == ["T1"]
    assert not relay.registered.is_set()  # the recovery is still owed ...
    assert relay.stalled_since is not None  # ... and readiness hears of it


class SlowScan:
    """A collection whose scans (`find`) take `seconds` before the first document; the rest answers."""

    def __init__(self, collection: Any, seconds: float) -> None:
        self._collection = collection
        self._seconds = seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def find(self, *args: Any, **kwargs: Any) -> Any:
        async def slowly() -> Any:
            await asyncio.sleep(self._seconds)
            async for doc in self._collection.find(*args, **kwargs):
                yield doc

        return slowly()


async def test_a_long_sweep_keeps_renewing_the_lease_so_peers_do_not_take_the_relay_for_dead() -> None:
    """Before, the heartbeat waited behind the sweep: a sweep of many heartbeats left the lease stale, and
    every peer swept the relay's collections again (duplicates on the topic)."""
    real: Any = InMemoryMongo()["svc"]
    await real[LEASES].insert_many(  # a relay that died: the start-up sweep is owed
        [{"_id": "registry"}, {"_id": "killed", "alive_at": datetime.now(UTC) - timedelta(hours=1)}]
    )
    db = {"orders": SlowScan(real["orders"], seconds=3.0), LEASES: real[LEASES]}

    async def publish(topic: str, ev: CloudEvent) -> None:
        return None

    relay = OutboxRelay(cast(Any, db), ["orders"], publish, poll_interval_s=0.05, heartbeat_s=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    seen: set[datetime] = set()
    try:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        while loop.time() - begun < 1.5:  # well inside the three-second start-up sweep on a busy machine
            await asyncio.sleep(0.05)
            lease = await real[LEASES].find_one({"_id": relay.leases.id})
            if lease is not None:
                seen.add(lease["alive_at"])
        assert not relay.registered.is_set()  # still sweeping ...
    finally:
        stop.set()
        await running
    assert len(seen) >= 4  # ... and the lease was renewed at every heartbeat meanwhile


async def test_the_oldest_pending_age_grows_while_a_document_waits_and_resets_once_it_is_published() -> None:
    db = InMemoryMongo()["test"]
    refused = True

    async def publish(topic: str, ev: CloudEvent) -> None:
        if refused and ev.subject == "A":
            raise NetworkTimeout("broker unreachable")

    relay = OutboxRelay(db, ["orders"], publish)
    assert relay.oldest_pending_s() == 0.0
    for doc_id in "AB":
        await db["orders"].insert_one(
            new_with_events({"_id": doc_id}, Topic.TICKETS, [ticket_created(doc_id)])
        )
        relay.notify("orders", doc_id)
    await asyncio.sleep(0.2)
    try:
        await relay.drain(sweep=False)
    except NetworkTimeout:
        pass
    # B went out; A failed and is queued again, its wait counted from when it was first told about.
    first = relay.oldest_pending_s()
    assert first >= 0.2
    await asyncio.sleep(0.1)
    assert relay.oldest_pending_s() >= first + 0.1  # it keeps growing while nothing goes out
    refused = False
    assert await relay.drain(sweep=False) == 1
    assert relay.oldest_pending_s() == 0.0
