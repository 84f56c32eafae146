"""Load generators that count errors instead of stopping at the first one (pipeline.py's raise)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass

import httpx
from harness import auth

from benchmarks.pipeline import percentile, ticket_body


@dataclass
class Shot:
    """One POST /v1/tickets: when it was sent (time.monotonic()), how long it took, what came back."""

    sent_at: float
    latency_s: float
    status: int  # 0: no answer (transport error or timeout)
    ticket_id: str | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.ticket_id is not None


async def post_counted(http: httpx.AsyncClient, url: str, i: int, tag: str) -> Shot:
    headers = {**auth("dev-web-token"), "Idempotency-Key": f"{tag}-{i}"}
    sent = time.monotonic()
    try:
        response = await http.post(f"{url}/v1/tickets", json=ticket_body(i, tag), headers=headers)
    except httpx.HTTPError:
        return Shot(sent, time.monotonic() - sent, 0, None)
    latency = time.monotonic() - sent
    ticket_id = None
    if 200 <= response.status_code < 300:
        try:
            ticket_id = response.json()["id"]
        except (ValueError, KeyError):
            ticket_id = None
    return Shot(sent, latency, response.status_code, ticket_id)


async def closed_loop(url: str, n: int, clients: int, max_s: float) -> tuple[list[Shot], float]:
    """POST up to n tickets from `clients` clients, each waiting for its answer; stop sending at max_s.
    Return the shots and the elapsed seconds."""
    tag = uuid.uuid4().hex[:8]
    counter = iter(range(n))
    shots: list[Shot] = []
    started = time.monotonic()
    deadline = started + max_s

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() >= deadline:
                return
            shots.append(await post_counted(http, url, i, tag))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return shots, time.monotonic() - started


async def open_loop(url: str, rate_per_s: float, duration_s: float) -> list[Shot]:
    """POST at a fixed rate for duration_s (rate x duration requests), whatever the answers."""
    tag = uuid.uuid4().hex[:8]
    n = max(1, int(rate_per_s * duration_s))
    start = time.monotonic()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        tasks = []
        for i in range(n):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post_counted(http, url, i, tag)))
        return list(await asyncio.gather(*tasks))


def pcts(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 of values in seconds (a missing observation is math.inf)."""
    return {f"p{p}": percentile(values, p) for p in (50, 95, 99)}


def ms(seconds: float) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if math.isinf(seconds):
        return "never"
    if seconds >= 10:
        return f"{seconds:,.1f} s"
    return f"{seconds * 1000:,.0f} ms"
