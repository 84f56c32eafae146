"""Drive the whole platform as a user loads it: five real services, tickets POSTed to intake over HTTP,
assignments read back from Kafka, database commands per ticket scraped from each service's /metrics.

Used by `make bench` (figures) and by `tests/integration/test_flat_cost.py` (counts, never timings).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from harness import PIPELINE_SERVICE_NAMES, Platform, auth

from aftersales.shared.contracts import Topic

REGION = "310000/310100/310104"
ALWAYS_OPEN = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
ASSIGNED = b"aftersales.assignment.assigned.v1"
CREATED = b"aftersales.ticket.created.v1"
TECHNICIANS = 50


# The services' own defaults for their background intervals. The test harness shortens them (a relay
# heartbeat every 2 s) so tests finish fast; `make bench` and everything
# started by `start_platform` (the flat-cost test too) run with these.
SERVICE_DEFAULTS = {
    "OUTBOX_HEARTBEAT_S": "10",
    "OUTBOX_POLL_INTERVAL_S": "0.5",
    "TIMER_POLL_INTERVAL_S": "1",
    "CONSUMER_BACKOFF_S": "0.2",
}


async def start_platform(platform: Platform, **env: str) -> None:
    """Start all five services and give routing one grid, open around the clock, with ample capacity."""
    await platform.start_ready(
        *PIPELINE_SERVICE_NAMES, PUBLISH_REPORTS="false", **{**SERVICE_DEFAULTS, **env}
    )
    routing = platform.url("routing")
    async with httpx.AsyncClient(timeout=30.0) as http:
        grid = {
            "id": "g-bench",
            "name": "bench",
            "region_path": REGION.split("/"),
            "device_types": [],
            "calendar": {"timezone": "UTC", "weekly": ALWAYS_OPEN},
            "teams": [],
            "neighbours": [],
            "supervisor_id": "sup-bench",
            "surge": {"backlog_threshold": 1_000_000, "capacity_factor": 1.5, "automatic": False},
        }
        (await http.put(f"{routing}/v1/grids/g-bench", json=grid, headers=auth())).raise_for_status()
        for t in range(TECHNICIANS):
            tech = {
                "id": f"tech-{t}",
                "name": f"tech {t}",
                "grid_id": "g-bench",
                "tier": 1,
                "capacity": 1000,
                "on_duty": True,
            }
            r = await http.put(f"{routing}/v1/technicians/tech-{t}", json=tech, headers=auth())
            r.raise_for_status()


def ticket_body(i: int, tag: str) -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {
            "name": f"Load {tag} {i}",
            "email": f"load-{tag}-{i}@example.com",
            "region_code": REGION,
        },
        "product": {"device_type": "air_conditioner", "purchase_date": "2025-01-01"},
        "title": "Not cooling",
        "description": "The unit blows warm air.",
    }


@dataclass
class Posted:
    ticket_id: str
    sent_at: float  # time.monotonic() when the POST was sent
    latency_s: float


async def post_one(http: httpx.AsyncClient, url: str, i: int, tag: str) -> Posted:
    headers = {**auth("dev-web-token"), "Idempotency-Key": f"{tag}-{i}"}
    sent = time.monotonic()
    response = await http.post(f"{url}/v1/tickets", json=ticket_body(i, tag), headers=headers)
    latency = time.monotonic() - sent
    if response.status_code != 201:
        raise AssertionError(f"POST /v1/tickets answered {response.status_code}: {response.text[:300]}")
    return Posted(response.json()["id"], sent, latency)


async def closed_loop(url: str, n: int, clients: int, tag: str | None = None) -> list[Posted]:
    """POST n tickets from `clients` concurrent clients, each waiting for its answer before the next."""
    tag = tag or uuid.uuid4().hex[:8]
    counter = iter(range(n))
    out: list[Posted] = []

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            out.append(await post_one(http, url, i, tag))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return out


@dataclass
class TopicWatch:
    """Reads a topic from its end in the background and records when each ticket's event of a type came."""

    bootstrap: str
    topic: str
    ce_type: bytes
    seen: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> TopicWatch:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            group_id=None,
        )
        await self._consumer.start()
        await self._consumer.seek_to_end()
        for tp in self._consumer.assignment():  # the seek is lazy: resolve the end now, not at the first
            await self._consumer.position(tp)  # fetch, after which an event already published is skipped
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.monotonic()
            for records in batch.values():
                for r in records:
                    headers = dict(r.headers or ())
                    if headers.get("ce_type") == self.ce_type:
                        self.seen.setdefault(headers["ce_subject"].decode(), now)

    async def wait_for(self, ticket_ids: Iterable[str], timeout_s: float) -> bool:
        """Wait until every ticket was seen; return False when the deadline came first."""
        wanted = set(ticket_ids)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if wanted <= self.seen.keys():
                return True
            await asyncio.sleep(0.05)
        return wanted <= self.seen.keys()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


async def watch_assigned(platform: Platform) -> TopicWatch:
    return await TopicWatch(platform.infra.kafka, platform.topic(Topic.ASSIGNMENTS), ASSIGNED).start()


DbCounts = dict[str, dict[tuple[str, str], float]]


async def db_commands(
    platform: Platform, services: Iterable[str] = PIPELINE_SERVICE_NAMES, *, detail: bool = False
) -> DbCounts:
    """Return service -> (command, by_id) -> commands sent so far, from each service's /metrics
    (with `detail`, the command is "<collection>.<command>")."""
    out: DbCounts = {}
    async with httpx.AsyncClient(timeout=10.0) as http:
        for service in services:
            text = (await http.get(f"{platform.url(service)}/metrics")).text
            counts: dict[tuple[str, str], float] = defaultdict(float)
            for line in text.splitlines():
                if not line.startswith("aftersales_db_commands_total{"):
                    continue
                labels_part, value = line.rsplit(" ", 1)
                labels = dict(
                    item.split("=", 1) for item in labels_part[labels_part.index("{") + 1 : -1].split(",")
                )
                key = (labels["command"].strip('"'), labels["by_id"].strip('"'))
                if detail:
                    key = (f"{labels.get('collection', '').strip(chr(34))}.{key[0]}", key[1])
                counts[key] += float(value)
            out[service] = dict(counts)
    return out


def per_ticket(before: DbCounts, after: DbCounts, tickets: int) -> dict[str, dict[str, float]]:
    """Return service -> {"commands": per ticket, "not_by_id": per ticket} between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for service, counts in after.items():
        earlier = before.get(service, {})
        total = sum(v - earlier.get(k, 0.0) for k, v in counts.items())
        scans = sum(v - earlier.get(k, 0.0) for k, v in counts.items() if k[1] == "false")
        out[service] = {"commands": total / tickets, "not_by_id": scans / tickets}
    return out


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]
