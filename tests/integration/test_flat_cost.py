"""Flat cost as data grows, guarded by counting database commands (never by timing them).

All five services run as real processes; tickets go in over HTTP until routing's `assigned` event is on
Kafka. Each service counts the commands it sends (`aftersales_db_commands_total{service,collection,
command,by_id}`). The same load runs with ~1k and with ~10k tickets of history stored (ten times: a
per-ticket cost that grows with the history shows at any ratio; 20k took ~100 s more of the suite), and:
- the commands per ticket of each service must not grow with the history; reads taken on a clock (a
  whole read of a small bounded collection kept for a second, the outbox relay's heartbeat) are counted
  per second of the window instead, and must not grow either (per ticket they rise with how long a
  window takes on a loaded machine: routing's went from 6.0 to 7.6 in one CI run, history or not);
- no command may select documents of a history collection (one that grows with every ticket) by
  anything but `_id` on this path: on FerretDB that is a scan whose cost grows with the history.
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from harness import PIPELINE_SERVICE_NAMES, Platform, mongo
from pymongo.errors import BulkWriteError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.pipeline import closed_loop, db_commands, start_platform, watch_assigned

from aftersales.shared.outbox import RELAYS

pytestmark = pytest.mark.long_running(minutes=3)

# Collections that grow with every ticket. Anything else is bounded by configuration or by open work
# (grids, technicians, the routing queue, open-items indexes, metrics batches in flight, live timers).
HISTORY = {
    "intake": {
        "tickets",
        "customers",
        "customer_products",
        "customer_history",
        "request_keys",
        "timeline",
        "conversation",
        "applied_events",
    },
    "routing": {"work_orders"},
    "followup": {"tickets", "visits", "customers"},
    "feedback": {"tickets", "surveys", "complaints"},
    "metrics": {"facts", "reports"},  # rollups: one document per day and a few more, not per ticket
}
TICKETS_PER_WINDOW = 120
SMALL, LARGE = 1_000, 10_000


Counts = dict[str, dict[tuple[str, str], float]]  # service -> (collection.command, by_id) -> commands


async def measure(platform: Platform, n: int) -> tuple[Counts, float]:
    """Run n tickets to `assigned`; return per service the commands per ticket by (collection.command,
    by_id), and how many seconds the window took."""
    watch = await watch_assigned(platform)
    loop = asyncio.get_running_loop()
    try:
        before = await db_commands(platform, detail=True)
        began = loop.time()
        posted = await closed_loop(platform.url("intake"), n, 8)
        assert await watch.wait_for([p.ticket_id for p in posted], timeout_s=300), "not all assigned"
        after = await db_commands(platform, detail=True)
        seconds = loop.time() - began
    finally:
        await watch.stop()
    out: Counts = {}
    for service in PIPELINE_SERVICE_NAMES:
        earlier = before.get(service, {})
        out[service] = {k: (v - earlier.get(k, 0.0)) / n for k, v in after[service].items()}
    return out, seconds


def clocked(service: str, key: tuple[str, str]) -> bool:
    """A command taken on a clock, not per ticket: a whole read of a small bounded collection (the
    technicians, grids and SLA policy that routing keeps for a second, gauges) or the outbox relay's
    heartbeat. How many a window holds depends on how long it takes (a loaded machine: longer), not on
    the tickets or the history."""
    command, by_id = key
    collection, _, verb = command.partition(".")
    whole_read = by_id == "false" and verb in {"find", "count", "aggregate"}
    return collection == RELAYS or (whole_read and collection not in HISTORY[service])


def split(window: Counts, seconds: float, tickets: int) -> tuple[Counts, Counts]:
    """Return (commands per ticket without the clocked ones, clocked commands per second)."""
    per_ticket = {s: {k: v for k, v in c.items() if not clocked(s, k)} for s, c in window.items()}
    per_second = {
        s: {k: v * tickets / seconds for k, v in c.items() if clocked(s, k)} for s, c in window.items()
    }
    return per_ticket, per_second


async def grow_history(platform: Platform, target: int) -> int:
    """Copy the stored documents of every history collection until intake holds `target` tickets."""
    client = mongo(platform.infra)
    try:
        stored = await client[platform.database("intake")]["tickets"].count_documents({})
        copies = max(0, (target - stored) // max(stored, 1))

        async def grow(service: str, collections: set[str]) -> None:
            db = client[platform.database(service)]
            for name in collections:
                docs = [d async for d in db[name].find({})]
                for copy in range(copies if docs else 0):
                    batch = [_copy(d, f"-h{copy}") for d in docs]
                    try:
                        await db[name].insert_many(batch, ordered=False)
                    except BulkWriteError:
                        pass  # a unique key that cannot be copied (none expected); the rest went in

        # the services' databases side by side: the server writes to different databases at once
        await asyncio.gather(*(grow(service, names) for service, names in HISTORY.items()))
        return int(await client[platform.database("intake")]["tickets"].count_documents({}))
    finally:
        await client.close()


def _copy(doc: dict[str, Any], suffix: str) -> dict[str, Any]:
    out = {**doc, "_id": f"{doc['_id']}{suffix}"}
    out.pop("outbox", None)
    if "storm_key" in out:
        out["storm_key"] = f"done:{out['_id']}"
    return out


def history_scans(window: Counts) -> dict[str, float]:
    scans: dict[str, float] = defaultdict(float)
    for service, counts in window.items():
        for (command, by_id), per_ticket in counts.items():
            collection = command.split(".", 1)[0]
            if by_id == "false" and collection in HISTORY[service] and per_ticket > 0:
                scans[f"{service}:{command}"] += per_ticket
    return dict(scans)


def totals(window: Counts) -> dict[str, float]:
    return {service: sum(counts.values()) for service, counts in window.items()}


@pytest.mark.timeout(600)  # ~3 minutes, most of it writing 10k tickets of history
async def test_db_commands_per_ticket_stay_flat_from_1k_to_10k_stored_tickets(platform: Platform) -> None:
    await start_platform(platform)  # with the services' own background intervals (SERVICE_DEFAULTS)
    await measure(platform, 30)  # warm-up: caches, first writes of each collection
    stored = await grow_history(platform, SMALL)
    assert stored >= SMALL * 0.8
    small_window, small_s = await measure(platform, TICKETS_PER_WINDOW)
    stored = await grow_history(platform, LARGE)
    assert stored >= LARGE * 0.8, f"history grew to {stored} tickets only"
    large_window, large_s = await measure(platform, TICKETS_PER_WINDOW)

    assert history_scans(small_window) == {}, "commands selecting history by something other than _id"
    assert history_scans(large_window) == {}, "commands selecting history by something other than _id"
    small, small_clocked = split(small_window, small_s, TICKETS_PER_WINDOW)
    large, large_clocked = split(large_window, large_s, TICKETS_PER_WINDOW)
    small_totals, large_totals = totals(small), totals(large)
    small_rates, large_rates = totals(small_clocked), totals(large_clocked)
    print(
        f"windows of {TICKETS_PER_WINDOW} tickets: {small_s:.1f} s at ~{SMALL:,}, "
        f"{large_s:.1f} s at ~{stored:,}"
    )
    print(f"commands per ticket at ~{SMALL:,}: {rounded(small_totals)}")
    print(f"commands per ticket at ~{stored:,}: {rounded(large_totals)}")
    print(f"clocked commands per second at ~{SMALL:,}: {rounded(small_rates)}")
    print(f"clocked commands per second at ~{stored:,}: {rounded(large_rates)}")
    for service in PIPELINE_SERVICE_NAMES:
        # Background work left in the per-ticket count (timer sweeps, relay passes) depends a little on
        # how long a window takes, hence the small allowance; a per-ticket cost that grows with the data
        # would be far above it.
        assert large_totals[service] <= small_totals[service] * 1.15 + 0.5, (
            f"{service}: {small_totals[service]:.2f} commands per ticket at ~{SMALL:,}, "
            f"{large_totals[service]:.2f} at ~{stored:,}; the commands that changed: "
            f"{changed(small[service], large[service])}"
        )
        # Clocked reads are bounded per second by their clocks, whatever the history.
        assert large_rates[service] <= small_rates[service] * 1.5 + 1.0, (
            f"{service}: clocked commands per second grew: "
            f"{changed(small_clocked[service], large_clocked[service])}"
        )


def rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in figures.items()}


def changed(
    small: dict[tuple[str, str], float], large: dict[tuple[str, str], float]
) -> dict[str, tuple[float, float]]:
    """The commands whose figure (per ticket, or per second for clocked ones) differs by more than 0.05
    between the windows, with both figures."""
    keys = sorted(set(small) | set(large), key=lambda k: -abs(large.get(k, 0.0) - small.get(k, 0.0)))
    return {
        f"{command} by_id={by_id}": (
            round(small.get((command, by_id), 0.0), 2),
            round(large.get((command, by_id), 0.0), 2),
        )
        for command, by_id in keys
        if abs(large.get((command, by_id), 0.0) - small.get((command, by_id), 0.0)) > 0.05
    }
