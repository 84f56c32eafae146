"""The bare-I/O floor: what plain aiokafka + PyMongo manage on the same Kafka and database when they do
the writes and hops of one ticket, with none of the platform's code in between."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import Infra, mongo

from benchmarks.config import Config
from benchmarks.load import pcts

TECHNICIANS = 50
CAPACITY = 1_000_000


def _ticket(ticket_id: str, i: int, at: datetime) -> dict[str, Any]:
    return {
        "_id": ticket_id,
        "version": 1,
        "status": "new",
        "channel": "web",
        "category": "hardware_fault",
        "priority": "P2",
        "customer_id": f"C-{ticket_id[2:]}",
        "region_code": "310000/310100/310104",
        "product": {"device_type": "air_conditioner", "purchase_date": "2025-01-01"},
        "title": "Not cooling",
        "description": "The unit blows warm air.",
        "created_at": at,
        "updated_at": at,
        "n": i,
    }


def _event(kind: str, subject: str, data: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": str(uuid.uuid4()),
        "ce_source": "/bench/floor",
        "ce_type": kind,
        "ce_subject": subject,
        "ce_time": datetime.now(UTC).isoformat(),
        "content-type": "application/json",
    }
    return json.dumps(data, default=str).encode(), [(k, v.encode()) for k, v in headers.items()]


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=4, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _preseed(db: Any, n: int, chunk: int) -> None:
    """Fill the floor's collections with n tickets and work orders first (the growth run)."""
    base = datetime.now(UTC) - timedelta(days=90)
    for start in range(0, n, chunk):
        ids = [f"H-{uuid.uuid4().hex[:20]}" for _ in range(min(chunk, n - start))]
        at = base + timedelta(seconds=start)
        await db["tickets"].insert_many(
            [{**_ticket(t, start + j, at), "status": "closed"} for j, t in enumerate(ids)], ordered=False
        )
        await db["work_orders"].insert_many(
            [
                {"_id": t, "technician_id": f"tech-{j % TECHNICIANS}", "status": "closed"}
                for j, t in enumerate(ids)
            ],
            ordered=False,
        )


async def floor(infra: Infra, cfg: Config, *, history: int = 0) -> dict[str, Any]:
    """Closed loop of cfg.floor_workers workers, each ticket: insert ticket, produce, conditional $inc on a
    technician, insert work order, produce, update ticket. Return tickets/s and per-ticket latency."""
    tag = uuid.uuid4().hex[:8]
    database, topics = f"bench_floor_{tag}", [f"benchfloor{tag}.tickets", f"benchfloor{tag}.assignments"]
    client = mongo(infra)
    db = client[database]
    await _create_topics(infra.kafka, topics)
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await db["technicians"].insert_many(
            [{"_id": f"tech-{t}", "active": 0, "capacity": CAPACITY} for t in range(TECHNICIANS)]
        )
        if history:
            print(f"    floor: {history:,} tickets of history first", flush=True)
            await _preseed(db, history, max(1000, cfg.seed_chunk))
        counter = iter(range(cfg.floor_tickets))
        latencies: list[float] = []
        refused = 0
        started = time.monotonic()
        deadline = started + cfg.floor_max_s

        async def worker() -> None:
            nonlocal refused
            for i in counter:
                if time.monotonic() >= deadline:
                    return
                t0 = time.monotonic()
                ticket_id = f"F-{uuid.uuid4().hex[:20]}"
                now = datetime.now(UTC)
                await db["tickets"].insert_one(_ticket(ticket_id, i, now))
                value, headers = _event("aftersales.ticket.created.v1", ticket_id, {"ticket_id": ticket_id})
                await producer.send_and_wait(topics[0], value, key=ticket_id.encode(), headers=headers)
                tech = f"tech-{i % TECHNICIANS}"
                took = await db["technicians"].update_one(
                    {"_id": tech, "active": {"$lt": CAPACITY}}, {"$inc": {"active": 1}}
                )
                refused += took.modified_count != 1
                await db["work_orders"].insert_one(
                    {"_id": ticket_id, "technician_id": tech, "status": "assigned", "assigned_at": now}
                )
                value, headers = _event(
                    "aftersales.assignment.assigned.v1",
                    ticket_id,
                    {"ticket_id": ticket_id, "technician": tech},
                )
                await producer.send_and_wait(topics[1], value, key=ticket_id.encode(), headers=headers)
                await db["tickets"].update_one(
                    {"_id": ticket_id},
                    {"$set": {"status": "assigned", "technician_id": tech}, "$inc": {"version": 1}},
                )
                latencies.append(time.monotonic() - t0)

        await asyncio.gather(*(worker() for _ in range(cfg.floor_workers)))
        elapsed = time.monotonic() - started
    finally:
        await producer.stop()
        await client.drop_database(database)
        await client.close()
        await _delete_topics(infra.kafka, topics)
    done = len(latencies)
    return {
        "tickets": done,
        "workers": cfg.floor_workers,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed > 0 else 0.0,
        "refused_inc": refused,
        **pcts(latencies),
    }


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics(names)
    except Exception as exc:  # leaving two small topics behind is harmless
        print(f"    (could not delete the floor's topics: {exc!r:.100})")
    finally:
        await admin.close()
