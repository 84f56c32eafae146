"""What a relay's heartbeat tells its listeners (the timers, which then look for timers a gone process
scheduled): each process gone once, however it went, and nothing for a lease that left before it
started. In-memory database: the lease logic, not the server, is under test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
