"""Stages that load the platform through intake's HTTP API: intake closed loop, KPI freshness, and the
end-to-end open loop that finds the highest sustained rate."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from harness import Platform, auth

from aftersales.shared.contracts import Topic
from benchmarks.config import Config
from benchmarks.load import Shot, closed_loop, open_loop, pcts
from benchmarks.pipeline import CREATED, TopicWatch, db_commands, per_ticket, watch_assigned
from benchmarks.probes import LagProbe, wait_drained


@dataclass
class Run:
    """One pass over the stages on one platform ("base" on a fresh platform, "growth" on seeded history)."""

    label: str
    platform: Platform
    cfg: Config
    probe: LagProbe
    floor_rate: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {self.label}: {text}", flush=True)

    async def drain(self, what: str) -> float | None:
        took = await wait_drained(self.probe, self.cfg.drain_max_s)
        if took is None:
            lag = await self.probe.lag_safe()
            self.say(f"not drained {self.cfg.drain_max_s:.0f} s after {what}: {_lag_text(lag)}")
        return took


def _lag_text(lag: dict[tuple[str, str], int]) -> str:
    return ", ".join(f"{g}/{t} {n}" for (g, t), n in sorted(lag.items()) if n) or "lag 0"


# ---------------------------------------------------------------- intake


async def _not_stored(platform: Platform, ids: list[str], watch: TopicWatch) -> int:
    """Tickets answered 2xx without a ticket.created event within 30 s, and that GET cannot find."""
    await watch.wait_for(ids, timeout_s=30)
    missing = [t for t in ids if t not in watch.seen]
    gone = 0
    async with httpx.AsyncClient(timeout=10.0) as http:
        for ticket_id in missing[:200]:
            r = await http.get(f"{platform.url('intake')}/v1/tickets/{ticket_id}", headers=auth())
            gone += r.status_code != 200
    return gone + max(0, len(missing) - 200)


async def intake(run: Run) -> dict[str, Any]:
    cfg, platform = run.cfg, run.platform
    out: dict[str, Any] = {}
    for clients in cfg.intake_clients:
        run.say(f"intake closed loop, {clients} clients, up to {cfg.intake_tickets} tickets")
        watch = await TopicWatch(platform.infra.kafka, platform.topic(Topic.TICKETS), CREATED).start()
        try:
            shots, elapsed = await closed_loop(
                platform.url("intake"), cfg.intake_tickets, clients, cfg.intake_max_s
            )
            ok = [s.ticket_id for s in shots if s.ok and s.ticket_id]
            not_stored = await _not_stored(platform, ok, watch)
        finally:
            await watch.stop()
        figures = {
            "clients": clients,
            "tickets": len(shots),
            "rate": len(ok) / elapsed if elapsed > 0 else 0.0,
            "errors": len(shots) - len(ok),
            "not_stored": not_stored,
            **pcts([s.latency_s for s in shots]),
        }
        out[str(clients)] = figures
        run.say(
            f"  {figures['rate']:.1f} tickets/s, p99 {figures['p99'] * 1000:.0f} ms, "
            f"{figures['errors']} errors, {not_stored} not stored"
        )
        await run.drain(f"intake at {clients} clients")
    return out


# ---------------------------------------------------------------- KPI freshness


async def _created_count(http: httpx.AsyncClient, url: str) -> int | None:
    try:
        r = await http.get(f"{url}/v1/kpis", params={"group_by": "all"}, headers=auth())
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    rows = r.json().get("rows") or []
    return sum(int(row.get("counts", {}).get("created", 0)) for row in rows)


async def kpi(run: Run) -> dict[str, Any]:
    """Open loop at 25 % of the floor; the i-th ticket is counted when GET /v1/kpis shows base + i."""
    cfg, platform = run.cfg, run.platform
    rate = run.floor_rate * 0.25
    run.say(f"KPI freshness at {rate:.1f} tickets/s for {cfg.kpi_duration_s:.0f} s")
    url = platform.url("metrics")
    polls: list[tuple[float, int]] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=10.0) as http:
        base = await _created_count(http, url) or 0

        async def poll() -> None:
            while not stop.is_set():
                count = await _created_count(http, url)
                if count is not None:
                    polls.append((time.monotonic(), count))
                await asyncio.sleep(cfg.kpi_poll_s)

        poller = asyncio.create_task(poll())
        try:
            shots = await open_loop(platform.url("intake"), rate, cfg.kpi_duration_s)
            ok = sorted((s for s in shots if s.ok), key=lambda s: s.sent_at)
            deadline = time.monotonic() + cfg.kpi_wait_s
            while time.monotonic() < deadline and not (polls and polls[-1][1] >= base + len(ok)):  # noqa: ASYNC110
                await asyncio.sleep(cfg.kpi_poll_s)
        finally:
            stop.set()
            await asyncio.gather(poller, return_exceptions=True)
    if not polls:
        run.say("  GET /v1/kpis never answered 200: nothing counted")
    latencies = []
    for i, shot in enumerate(ok):
        at = next((t for t, count in polls if count >= base + i + 1), math.inf)
        latencies.append(max(0.0, at - shot.sent_at))
    figures = {
        "rate": rate,
        "tickets": len(shots),
        "errors": len(shots) - len(ok),
        "counted": sum(1 for x in latencies if not math.isinf(x)),
        **pcts(latencies),
    }
    run.say(f"  counted {figures['counted']}/{len(ok)}, p99 {figures['p99']:.2f} s")
    await run.drain("the KPI stage")
    return figures


# ---------------------------------------------------------------- end to end


async def _step(run: Run, pct: int) -> dict[str, Any]:
    cfg, platform = run.cfg, run.platform
    rate = run.floor_rate * pct / 100
    run.say(f"end to end at {pct} % of the floor = {rate:.1f} tickets/s for {cfg.e2e_duration_s:.0f} s")
    watch = await watch_assigned(platform)
    try:
        shots = await open_loop(platform.url("intake"), rate, cfg.e2e_duration_s)
        load_end = time.monotonic()
        ok: list[Shot] = [s for s in shots if s.ok]
        ids = {s.ticket_id for s in ok if s.ticket_id}
        caught_up: float | None = None
        while time.monotonic() - load_end <= cfg.lag_window_s:
            if ids <= watch.seen.keys() and await run.probe.behind_safe() == 0:
                caught_up = time.monotonic() - load_end
                break
            await asyncio.sleep(0.5)
        lag_at_window = {} if caught_up is not None else await run.probe.lag_safe()
        drained = caught_up is not None or await run.drain(f"the {pct} % step") is not None
        await watch.wait_for(ids, timeout_s=5)
        latencies = [watch.seen.get(s.ticket_id or "", math.inf) - s.sent_at for s in ok]
    finally:
        await watch.stop()
    sends = sorted(s.sent_at for s in shots)
    offered = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else rate
    errors = len(shots) - len(ok)
    sustained = caught_up is not None and errors == 0
    figures = {
        "pct": pct,
        "rate": rate,
        "offered": offered,
        "tickets": len(shots),
        "errors": errors,
        "assigned": sum(1 for x in latencies if not math.isinf(x)),
        "caught_up_s": caught_up,
        "sustained": sustained,
        "drained": drained,
        "lag_at_window": {f"{g}/{t}": n for (g, t), n in lag_at_window.items() if n},
        **pcts(latencies),
    }
    verdict = f"lag 0 after {caught_up:.1f} s" if caught_up is not None else "NOT caught up in the window"
    run.say(
        f"  p50 {figures['p50']:.2f} s, p99 {figures['p99']:.2f} s, {errors} errors, "
        f"{figures['assigned']}/{len(ok)} assigned, {verdict}"
    )
    return figures


async def e2e(run: Run) -> dict[str, Any]:
    """Step the offered rate; report each step and the highest one every group caught up with."""
    before = await db_commands(run.platform)
    steps: list[dict[str, Any]] = []
    drained = True
    for pct in run.cfg.e2e_steps:
        step = await _step(run, pct)
        steps.append(step)
        if not step["sustained"]:
            run.say(f"  stopping the search at {pct} %")
            drained = step["drained"]
            break
        drained = await run.drain(f"the {pct} % step") is not None
    after = await db_commands(run.platform)
    posted = sum(s["tickets"] - s["errors"] for s in steps)
    passed = [s for s in steps if s["sustained"]]
    best = max(passed, key=lambda s: s["rate"]) if passed else None
    return {
        "steps": steps,
        "sustained_rate": best["rate"] if best else 0.0,
        "sustained_pct": best["pct"] if best else 0,
        "db_per_ticket": per_ticket(before, after, max(posted, 1)),
        "db_tickets": posted,
        "db_drained": drained,
    }
