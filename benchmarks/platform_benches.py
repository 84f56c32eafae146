"""Benchmarks of the services as real processes on the local Kafka broker and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from harness import Platform, auth, read_topic, start_infra

from aftersales.routing.demo import demo_calendar
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.events import TicketCreated
from aftersales.shared.envelope import new_event
from aftersales.shared.kafka import make_broker, publish_event
from aftersales.shared.settings import ServiceSettings


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def intake_http(n: int = 400, concurrency: int = 16) -> None:
    """POST n tickets with `concurrency` clients; latency percentiles, throughput, outbox lag to Kafka."""
    processes: list[Any] = []
    platform = Platform(start_infra(), processes)
    try:
        await platform.start_ready("intake")
        url = platform.url("intake")
        latencies: list[float] = []
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def client() -> None:
            async with httpx.AsyncClient(timeout=30.0) as http:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = {
                        "channel": "web",
                        "customer": {
                            "name": f"Bench {i}",
                            "email": f"bench{i}@example.com",
                            "region_code": "310000/310100/310104",
                        },
                        "product": {"device_type": "air_conditioner", "purchase_date": "2025-01-01"},
                        "title": "Not cooling",
                        "description": "bench",
                    }
                    headers = {**auth("dev-web-token"), "Idempotency-Key": f"bench-{i}"}
                    started = time.perf_counter()
                    response = await http.post(f"{url}/v1/tickets", json=body, headers=headers)
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 201, response.text

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        http_s = time.perf_counter() - started
        records = await read_topic(platform.infra, platform.topic(Topic.TICKETS), expect=n, timeout_s=300)
        all_published_s = time.perf_counter() - started
        print(f"intake POST /v1/tickets: {n / http_s:,.0f} req/s with {concurrency} clients ({n} tickets)")
        print(
            f"intake latency: p50 {_percentile(latencies, 50) * 1000:.0f} ms, "
            f"p95 {_percentile(latencies, 95) * 1000:.0f} ms, "
            f"p99 {_percentile(latencies, 99) * 1000:.0f} ms, "
            f"mean {statistics.mean(latencies) * 1000:.0f} ms"
        )
        print(
            f"intake: all {len(records)} created events on Kafka {all_published_s:.1f} s after the first POST"
        )
    finally:
        for proc in processes:
            proc.stop()


async def routing_assignment(n: int = 1_000) -> None:
    """Publish n TicketCreated events; time until routing has assigned every one."""
    processes: list[Any] = []
    platform = Platform(start_infra(), processes)
    try:
        await platform.start_ready("routing")
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
