"""Benchmarks of the shared machinery: envelope codec, outbox relay, reliable consumer."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import CloudEvent, decode_headers, from_kafka, new_event
from aftersales.shared.idempotency import apply_once
from aftersales.shared.kafka import make_broker, publish_event, subscribe
from aftersales.shared.mongo import ensure_indexes, make_client
from aftersales.shared.outbox import OutboxRelay, new_with_events, outbox_indexes
from aftersales.shared.settings import ServiceSettings

KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MONGO = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")


def _event(i: int) -> CloudEvent:
    return new_event(
        TicketCancelled(ticket_id=f"T-{i}", reason="bench", cancelled_at=datetime.now(UTC)),
        source="/bench",
        subject=f"T-{i}",
    )


def _settings(tag: str) -> ServiceSettings:
    return ServiceSettings(
        service_name=f"bench-{tag}",
        kafka_bootstrap_servers=KAFKA,
        mongodb_uri=MONGO,  # type: ignore[arg-type]
        kafka_topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        mongodb_database=f"bench_{tag}_{uuid.uuid4().hex[:8]}",
        kafka_partitions=4,
    )


async def envelope(n: int = 20_000) -> None:
    events = [_event(i) for i in range(n)]
    started = time.perf_counter()
    wire = [([(k, v.encode()) for k, v in e.headers().items()], e.value()) for e in events]
    encoded_s = time.perf_counter() - started
    started = time.perf_counter()
    for headers, value in wire:
        from_kafka(decode_headers(headers), value).model()
    decoded_s = time.perf_counter() - started
    print(f"envelope encode: {n / encoded_s:,.0f} events/s ({n} events)")
    print(f"envelope decode+validate: {n / decoded_s:,.0f} events/s ({n} events)")


async def outbox_relay(n: int = 2_000) -> None:
    """Documents written with one event each; time until the relay has published them all (acks=all)."""
    settings = _settings("outbox")
    client = make_client(settings)
    db = client[settings.database_name]
    await ensure_indexes(db, outbox_indexes(["orders"]))
    broker = make_broker(settings)
    await broker.start()
    topic = settings.topic(Topic.TICKETS)
    try:
        started = time.perf_counter()
        for i in range(n):
            await db["orders"].insert_one(new_with_events({"_id": f"T-{i}"}, Topic.TICKETS, [_event(i)]))
        write_s = time.perf_counter() - started

        async def publish(_: str, event: CloudEvent) -> None:
            await publish_event(broker, topic, event)

        relay = OutboxRelay(db, ["orders"], publish)
        started = time.perf_counter()
        published = await asyncio.wait_for(relay.drain(), timeout=300)
        relay_s = time.perf_counter() - started
        print(f"outbox write (state + event, one update): {n / write_s:,.0f} docs/s ({n} docs)")
        print(
            f"outbox relay publish (acks=all, idempotent): {published / relay_s:,.0f} events/s ({published})"
        )
    finally:
        await broker.stop()
        await client.drop_database(settings.database_name)
        await client.close()


async def consumer(n: int = 2_000) -> None:
    """Events consumed through the reliable subscriber, each applied once to MongoDB (apply_once)."""
    settings = _settings("consumer")
    client = make_client(settings)
    db = client[settings.database_name]
    broker = make_broker(settings)
    done = asyncio.Event()
    applied = 0

    async def handle(event: CloudEvent) -> None:
        nonlocal applied
        await apply_once(db["tallies"], event.subject, event.id, {"$inc": {"n": 1}}, upsert=True)
        applied += 1
        if applied >= n:
            done.set()

    subscribe(broker, settings, [Topic.TICKETS], handle)
    from aftersales.shared.kafka import ensure_topics

    await ensure_topics(settings, [Topic.TICKETS])
    await broker.start()
    topic = settings.topic(Topic.TICKETS)
    try:
        events = [_event(i) for i in range(n)]
        await asyncio.gather(*(publish_event(broker, topic, e) for e in events))
        started = time.perf_counter()
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - started
        print(f"reliable consumer (decode, validate, apply_once, commit): {n / elapsed:,.0f} events/s ({n})")
    finally:
        await broker.stop()
        await client.drop_database(settings.database_name)
        await client.close()
