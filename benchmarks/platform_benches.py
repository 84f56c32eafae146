"""Micro benchmark of one service as a real process: routing alone, fed TicketCreated events directly."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from harness import Platform, auth, read_topic, start_infra
from routing_demo import demo_calendar

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.events import TicketCreated
from aftersales.shared.envelope import new_event
from aftersales.shared.kafka import make_broker, publish_event
from aftersales.shared.settings import ServiceSettings
from benchmarks.pipeline import SERVICE_DEFAULTS


async def routing_assignment(n: int = 1_000) -> None:
    """Publish n TicketCreated events; time until routing has assigned every one."""
    processes: list[Any] = []
    platform = Platform(start_infra(), processes)
    try:
        await platform.start_ready("routing", **SERVICE_DEFAULTS)
        url = platform.url("routing")
        async with httpx.AsyncClient(timeout=30.0) as http:
            grid = {
                "id": "g1",
                "name": "bench",
                "region_path": ["310000", "310100", "310104"],
                "device_types": [],
                "calendar": demo_calendar(),
                "teams": [],
                "neighbours": [],
                "supervisor_id": "sup",
            }
            (await http.put(f"{url}/v1/grids/g1", json=grid, headers=auth())).raise_for_status()
            for t in range(20):
                tech = {
                    "id": f"t{t}",
                    "name": f"t{t}",
                    "grid_id": "g1",
                    "tier": 1,
                    "device_types": [],
                    "categories": [],
                    "capacity": n,
                    "on_duty": True,
                }
                (await http.put(f"{url}/v1/technicians/t{t}", json=tech, headers=auth())).raise_for_status()
        settings = ServiceSettings(
            service_name="bench",
            kafka_bootstrap_servers=platform.infra.kafka,
            kafka_topic_prefix=platform.prefix,
        )
        broker = make_broker(settings)
        await broker.start()
        topic = platform.topic(Topic.TICKETS)
        try:
            events = [
                new_event(
                    TicketCreated(
                        ticket_id=f"B-{i}-{uuid.uuid4().hex[:6]}",
                        channel=Channel.WEB,
                        category=Category.HARDWARE_FAULT,
                        priority=Priority.P3,
                        customer_id=f"C{i}",
                        customer_tier=CustomerTier.STANDARD,
                        region_code="310000/310100/310104",
                        device_type="air_conditioner",
                        created_at=datetime.now(UTC),
                        rules_version="bench",
                    ),
                    source="/bench",
                    subject=f"B-{i}",
                )
                for i in range(n)
            ]
            started = time.perf_counter()
            await asyncio.gather(*(publish_event(broker, topic, e) for e in events))
        finally:
            await broker.stop()
        assigned = await read_topic(
            platform.infra,
            platform.topic(Topic.ASSIGNMENTS),
            expect=n,
            timeout_s=600,
            where=lambda r: dict(r.headers or ()).get("ce_type") == b"aftersales.assignment.assigned.v1",
        )
        elapsed = time.perf_counter() - started
        print(
            f"routing: {len(assigned)} of {n} tickets assigned in {elapsed:.1f} s "
            f"({len(assigned) / elapsed:,.0f} assignments/s, one replica, 20 technicians)"
        )
    finally:
        for proc in processes:
            proc.stop()


async def technician_slots(pairs: int = 100, held: tuple[int, ...] = (10, 100, 500)) -> None:
    """What one slot costs as a technician holds more work orders: routing's own store code
    (`RoutingStore.reserve` and `release`, `technicians_in` read afresh) on 4 technicians that each
    hold `h` slots, for each h in `held`. The slots a technician holds live in his document (with
    his counter, so taking one is one atomic write); the database reads and writes the whole document.
    """
    from aftersales.routing.app import Settings
    from aftersales.routing.domain import Technician
    from aftersales.routing.store import INDEXES, OUTBOX_COLLECTIONS, RoutingStore, slot_key
    from aftersales.shared.mongo import ensure_indexes
    from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime

    infra = start_infra()
    settings = Settings(
        mongodb_uri=infra.mongodb_uri,  # type: ignore[arg-type]
        mongodb_database=f"bench_slots_{uuid.uuid4().hex[:8]}",
        kafka_bootstrap_servers=infra.kafka,
    )
    runtime = ServiceRuntime(settings, RuntimeSpec(outbox_collections=OUTBOX_COLLECTIONS, indexes=INDEXES))
    await ensure_indexes(runtime.db, INDEXES)
    store = RoutingStore(runtime.db)
    try:
        for h in held:
            techs = [f"s{h}-{t}" for t in range(4)]
            now = datetime.now(UTC)
            for tech in techs:
                doc = {"id": tech, "name": tech, "grid_id": "g1", "tier": 1, "capacity": 1000}
                await store.put_technician(Technician.model_validate(doc))
                keys = [slot_key(f"T-{tech}-{i:016x}", 1) for i in range(h)]
                # as `reserve` leaves them, h times over
                held_now = {"active_work_orders": h, "active_ids": keys, "last_assigned_at": now}
                await store.technicians.update_one({"_id": tech}, {"$set": held_now})
            started = time.perf_counter()
            for i in range(pairs):
                tech, key = techs[i % 4], slot_key(f"B-{h}-{i}", 1)
                assert await store.reserve(tech, key, 1000)
                assert await store.release(tech, key)
            pair_ms = (time.perf_counter() - started) / pairs * 1000
            started = time.perf_counter()
            for _ in range(20):
                store.forget_technicians()
                await store.technicians_in(["g1"])
            read_ms = (time.perf_counter() - started) / 20 * 1000
            await store.technicians.delete_many({"_id": {"$in": techs}})
            print(
                f"slots: {h:>4} held per technician: reserve + release {pair_ms:6.1f} ms a pair; "
                f"reading the {len(techs)} technicians {read_ms:6.1f} ms"
            )
    finally:
        await runtime.client.drop_database(settings.mongodb_database)
        await runtime.client.close()
