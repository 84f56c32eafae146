"""`make bench`: load the platform the way a user does, against real processes, real Kafka and the local
database; print one results table and write it, with machine facts, to docs/benchmarks.md.

    python -m benchmarks [stage ...]      stages: floor intake kpi e2e idle iot growth search (default: all)
    python -m benchmarks envelope|outbox|consumer|routing|slots     micro benchmarks of one piece each

Listed load stages run on a fresh platform; with `growth` they run again on a platform seeded with
BENCH_GROWTH_TICKETS tickets of history, and the table shows both and their ratio. Every stage is
bounded in count and time; sizes come from BENCH_* variables (`python -m benchmarks --help`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from harness import PIPELINE_SERVICE_NAMES, Infra, Platform, ServiceProcess, start_infra

from benchmarks import platform_benches, shared_benches
from benchmarks.config import Config, help_text
from benchmarks.floor import floor
from benchmarks.pipeline import SERVICE_DEFAULTS, start_platform
from benchmarks.probes import LagProbe, RssSampler, service_pids
from benchmarks.report import machine_facts, render, save_json, table, write_docs
from benchmarks.search_bench import search_stage
from benchmarks.seed import make_templates, seed_history
from benchmarks.stages_load import Run, e2e, intake, kpi
from benchmarks.stages_misc import idle, iot
from benchmarks.teardown import cleanup, stop_all

LOAD: dict[str, Callable[[Run], Awaitable[dict[str, Any]]]] = {
    "intake": intake,
    "kpi": kpi,
    "e2e": e2e,
    "idle": idle,
    "iot": iot,
}
STAGES = ("floor", *LOAD, "growth", "search")
MICRO: dict[str, Callable[[], Awaitable[None]]] = {
    "envelope": shared_benches.envelope,
    "outbox": shared_benches.outbox_relay,
    "consumer": shared_benches.consumer,
    "routing": platform_benches.routing_assignment,
    "slots": platform_benches.technician_slots,
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _floor(infra: Infra, cfg: Config, history: int = 0) -> dict[str, Any]:
    say(f"floor: {cfg.floor_tickets} tickets, {cfg.floor_workers} workers, plain aiokafka + PyMongo")
    result = await floor(infra, cfg, history=history)
    say(f"  floor {result['rate']:.1f} tickets/s ({result['tickets']} in {result['seconds']:.1f} s)")
    return result


async def _pass(run: Run, stages: list[str]) -> None:
    """Run the selected load stages on a started platform; a failing stage is reported, not fatal."""
    sampler = RssSampler(service_pids(run.platform)).start()
    try:
        for name in stages:
            if name not in LOAD:
                continue
            try:
                run.results[name] = await LOAD[name](run)
            except Exception as exc:
                run.say(f"stage {name} FAILED: {exc!r:.300}")
                traceback.print_exc()
                run.results.setdefault("errors", {})[name] = repr(exc)[:500]
                dead = [
                    p.name for p in run.platform.services.values() if p.proc and p.proc.poll() is not None
                ]
                if dead:
                    run.say(f"  services that exited: {dead}; logs in .test-logs/")
                    break
    finally:
        run.results["rss_peak_mb"] = await sampler.stop()


async def _start(platform: Platform, results: dict[str, Any], *, restart: bool = False) -> None:
    started = time.monotonic()
    if restart:
        await platform.start_ready(*PIPELINE_SERVICE_NAMES, PUBLISH_REPORTS="false", **SERVICE_DEFAULTS)
    else:
        await start_platform(platform)
    results["startup_s"] = time.monotonic() - started


async def _fresh(infra: Infra, processes: list[ServiceProcess], platforms: list[Platform], ctx: Ctx) -> None:
    platforms.append(fresh := Platform(infra, processes))
    say(f"fresh platform {fresh.prefix}: starting the five services")
    await _start(fresh, ctx.base)
    probe = await LagProbe(infra.kafka, fresh.prefix).start()
    try:
        await _pass(Run("fresh", fresh, ctx.cfg, probe, ctx.floor_rate, ctx.base), ctx.load)
    finally:
        await probe.stop()
        await stop_all(fresh.services.values())


async def _growth(infra: Infra, processes: list[ServiceProcess], platforms: list[Platform], ctx: Ctx) -> None:
    cfg, growth = ctx.cfg, ctx.growth
    platforms.append(template := Platform(infra, processes))
    templates, _ = await make_templates(template, cfg)
    platforms.append(seeded := Platform(infra, processes))
    say(f"growth platform {seeded.prefix}: creating its databases")
    await start_platform(seeded)
    await stop_all(seeded.services.values())
    growth["seed"] = await seed_history(seeded, templates, cfg)
    if "floor" in ctx.stages and not cfg.floor_rate:
        growth["floor"] = await _floor(infra, cfg, history=cfg.growth_tickets)
    if not ctx.load:
        return
    say("growth: starting the five services on the seeded databases")
    await _start(seeded, growth, restart=True)
    probe = await LagProbe(infra.kafka, seeded.prefix).start()
    try:
        label = f"{cfg.growth_tickets // 1000}k" if cfg.growth_tickets >= 1000 else str(cfg.growth_tickets)
        await _pass(Run(label, seeded, cfg, probe, ctx.floor_rate, growth), ctx.load)
    finally:
        await probe.stop()


@dataclass
class Ctx:
    cfg: Config
    stages: list[str]
    load: list[str]
    base: dict[str, Any] = field(default_factory=dict)
    growth: dict[str, Any] = field(default_factory=dict)
    floor_rate: float = 0.0


async def bench(cfg: Config, stages: list[str], argv: list[str]) -> int:
    infra = start_infra()
    processes: list[ServiceProcess] = []
    platforms: list[Platform] = []
    ctx = Ctx(cfg, stages, [s for s in stages if s in LOAD])
    try:
        if cfg.floor_rate:
            ctx.base["floor"] = {"rate": cfg.floor_rate, "tickets": 0, "workers": 0, "given": True}
        elif "floor" in stages or {"kpi", "e2e"} & set(stages):
            ctx.base["floor"] = await _floor(infra, cfg)
        ctx.floor_rate = ctx.base.get("floor", {}).get("rate", 0.0)
        for name, results, part in (("fresh", ctx.base, _fresh), ("growth", ctx.growth, _growth)):
            if (name == "fresh" and not ctx.load) or (name == "growth" and "growth" not in stages):
                continue
            try:
                await part(infra, processes, platforms, ctx)
            except Exception as exc:  # report what was measured so far, and why the rest is missing
                say(f"{name} run FAILED: {exc!r:.300}")
                traceback.print_exc()
                results.setdefault("errors", {})[name] = repr(exc)[:500]
        if "search" in stages:
            try:
                ctx.base["search"] = await search_stage(infra, processes, platforms, cfg)
            except Exception as exc:
                say(f"search stage FAILED: {exc!r:.300}")
                traceback.print_exc()
                ctx.base.setdefault("errors", {})["search"] = repr(exc)[:500]
    finally:
        await stop_all(processes)
        await cleanup(infra, platforms, keep=cfg.keep_data)
    return await _report(infra, cfg, argv, ctx.base, ctx.growth if "growth" in stages else None)


async def _report(
    infra: Infra, cfg: Config, argv: list[str], base: dict[str, Any], growth: dict[str, Any] | None
) -> int:
    facts = await machine_facts(infra)
    if not argv and not cfg.overrides():
        command = "make bench"
    else:
        command = " ".join(
            [*cfg.overrides(), "make bench" if not argv else "uv run python -m benchmarks", *argv]
        )
    notes = [
        "Sustained: no errors, every ticket answered 2xx has its `assignment.assigned` event, and every "
        f"`aftersales-*` consumer group of the platform is at lag 0, within {cfg.lag_window_s:.0f} s after "
        f"{cfg.e2e_duration_s:.0f} s of load; steps stop at the first rate that is not sustained.",
        "Latencies are from sending the POST; `never` = not seen within the wait (counted as infinite).",
        "Ratio = growth ÷ fresh for rates, fresh ÷ growth for times, CPU, memory and commands: ≥ 0.80 meets "
        "the flat-cost target. The growth run offers the same absolute rates as the fresh one.",
        "Idle CPU is % of one core, from /proc utime+stime; other processes on the machine were not stopped "
        "(the machine row shows how busy it was).",
    ]
    if growth and "seed" in growth:
        s = growth["seed"]
        notes.append(
            f"History: {s['tickets']:,} clones of {s['templates']} tickets taken through the whole loop "
            "(assigned, accepted, resolved, callback confirmed, survey answered, closed): "
            f"{s['documents']:,} documents written in bulk in {s['seconds']:.0f} s, datetimes spread over "
            f"{cfg.growth_days:.0f} past days. "
            "Shared documents (grids, technicians, KPI rollups) were not cloned, so KPI totals leave the "
            "history out; pending outbox entries were dropped and active timers skipped."
        )
    if cfg.quick:
        notes.append("BENCH_QUICK=1: every stage tiny; a smoke check, not figures.")
    for label, r in (("fresh", base), ("growth", growth or {})):
        for stage, error in (r.get("errors") or {}).items():
            notes.append(f"{label} run: stage {stage} failed: {error[:200]}")
    body = table(base, growth)
    section = render(facts, command, body, notes)
    print("\n" + section)
    path = save_json({"config": asdict(cfg), "facts": facts, "fresh": base, "growth": growth})
    print(f"\n(raw figures in {path.relative_to(path.parents[1])})")
    if cfg.write_docs:
        write_docs(section)
        print("docs/benchmarks.md updated")
    return 0


async def main(argv: list[str]) -> int:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker hiccup shows in the lag probe's line
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("Environment:\n" + help_text())
        return 0
    micro = [a for a in argv if a in MICRO]
    unknown = [a for a in argv if a not in MICRO and a not in STAGES]
    if unknown:
        print(f"unknown stage(s) {unknown}; choose from {[*STAGES, *MICRO]}", file=sys.stderr)
        return 2
    if micro:
        for name in micro:
            print(f"== {name}")
            await MICRO[name]()
        if len(micro) == len(argv):
            return 0
    stages = [a for a in argv if a in STAGES] or list(STAGES)
    if stages == ["growth"]:
        stages = [s for s in STAGES if s != "search"]
    return await bench(Config.from_env(), stages, [a for a in argv if a in STAGES])


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
