"""Stages without HTTP load: the IoT alert path over Kafka, and idle CPU and memory."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.requests import CustomerIn, IotSignal, ProductIn, TicketRequest
from aftersales.shared.envelope import new_event
from benchmarks.pipeline import db_commands
from benchmarks.probes import (
    cpu_percent,
    infra_pids,
    machine_busy_seconds,
    read_cpu,
    rss_mb,
    scrape,
    service_pids,
    total,
    wait_swept,
)
from benchmarks.stages_load import Run

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def alert_messages(n: int, devices: int) -> list[Message]:
    """n IoT alerts, round-robin over `devices` devices with one fault code each, as Kafka messages
    (CloudEvents built with the project's envelope around a validated TicketRequest)."""
    tag = uuid.uuid4().hex[:6]
    t0 = datetime.now(UTC)
    requests = []
    for d in range(devices):
        serial = f"BENCH-{tag}-{d}"
        requests.append(
            TicketRequest(
                channel="iot",
                customer=CustomerIn(id=f"OWNER-{serial}", region_code="310000/310100/310104"),
                product=ProductIn(device_type="chiller", serial=serial),
                title="Alert E42",
                iot=IotSignal(fault_code="E42", severity=3, observed_at=t0),
            )
        )
    out: list[Message] = []
    for i in range(n):
        request = requests[i % devices]
        signal = IotSignal(fault_code="E42", severity=3, observed_at=t0 + timedelta(milliseconds=i))
        event = new_event(
            request.model_copy(update={"iot": signal}),
            source="/gateways/iot",
            subject=request.product.serial or "",
        )
        out.append((event.key, event.value(), [(k, v.encode()) for k, v in event.headers().items()]))
    return out


def _consumed(samples: Any) -> tuple[float, float]:
    """(requests intake has taken from Kafka, tickets it created from IoT alerts) in a scrape."""
    taken = (
        total(samples, "aftersales_tickets_created_total", channel="iot")
        + total(samples, "aftersales_tickets_merged_total", channel="iot")
        + total(samples, "aftersales_ticket_requests_replayed_total", source="kafka")
        + total(samples, "aftersales_ticket_requests_rejected_total", source="kafka")
    )
    return taken, total(samples, "aftersales_tickets_created_total", channel="iot")


async def _intake_lag(run: Run) -> int:
    lag = await run.probe.lag_safe()
    if any(n < 0 for n in lag.values()):
        return -1  # Kafka did not answer: unknown, never 0
    return sum(
        n for (g, t), n in lag.items() if g.startswith("aftersales-intake") and t == Topic.REQUESTS.value
    )


async def iot(run: Run) -> dict[str, Any]:
    cfg, platform = run.cfg, run.platform
    await run.drain("the stages before the alert storm")
    run.say(f"IoT alert path: building {cfg.iot_alerts:,} alerts over {cfg.iot_devices} devices")
    messages = alert_messages(cfg.iot_alerts, cfg.iot_devices)
    intake_url = platform.url("intake")
    taken0, created0 = _consumed(await scrape(intake_url))
    producer = AIOKafkaProducer(
        bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True, linger_ms=20
    )
    await producer.start()
    topic = platform.topic(Topic.REQUESTS)
    started = time.monotonic()
    try:
        pending = [
            await producer.send(topic, value, key=key, headers=headers) for key, value, headers in messages
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    produced_s = time.monotonic() - started
    del messages
    run.say(f"  produced in {produced_s:.1f} s; consuming (up to {cfg.iot_max_s:.0f} s)")
    deadline = started + cfg.iot_max_s
    taken, created, done_at = 0.0, 0.0, None
    while True:
        now = time.monotonic()
        try:
            t, c = _consumed(await scrape(intake_url))
            taken, created = t - taken0, c - created0
        except httpx.HTTPError:
            pass  # intake too busy to answer /metrics within 10 s: ask again
        if taken >= cfg.iot_alerts or (taken > 0 and await _intake_lag(run) == 0):
            done_at = now
            break
        if now >= deadline:
            break
        await asyncio.sleep(0.5)
    elapsed = (done_at or time.monotonic()) - started
    left = await _intake_lag(run)
    figures = {
        "alerts": cfg.iot_alerts,
        "devices": cfg.iot_devices,
        "produce_s": produced_s,
        "consumed": int(taken),
        "seconds": elapsed,
        "rate": taken / elapsed if elapsed > 0 else 0.0,
        "tickets": int(created),
        "lag_left": left,
        "finished": done_at is not None,
    }
    run.say(
        f"  {figures['consumed']:,} consumed in {elapsed:.1f} s = {figures['rate']:,.0f} alerts/s, "
        f"{figures['tickets']} tickets, {left:,} left in intake's lag"
    )
    return figures


async def idle(run: Run) -> dict[str, Any]:
    """CPU of the database, Kafka and each service over cfg.idle_s with no traffic; RSS of each service."""
    cfg, platform = run.cfg, run.platform
    drained = await run.drain("the load before the idle stage")
    swept = await wait_swept([p.url for p in platform.services.values()])
    run.say(f"start-up outbox sweeps done (waited {swept:.0f} s)")
    services = service_pids(platform)
    pids = {**services, **infra_pids()}
    run.say(f"idle for {cfg.idle_s:.0f} s ({', '.join(f'{k} {v}' for k, v in pids.items())})")
    commands_before = await db_commands(platform, detail=True)
    cpu_before, busy_before, started = read_cpu(pids), machine_busy_seconds(), time.monotonic()
    await asyncio.sleep(cfg.idle_s)
    cpu_after, busy_after, elapsed = read_cpu(pids), machine_busy_seconds(), time.monotonic() - started
    commands_after = await db_commands(platform, detail=True)
    cpu = cpu_percent(cpu_before, cpu_after, elapsed)
    machine = 100.0 * (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1e-9)
    commands_per_min = {
        s: 60.0 * sum(v - commands_before.get(s, {}).get(k, 0.0) for k, v in after.items()) / elapsed
        for s, after in commands_after.items()
    }
    # what each service sent while idle, busiest first: "<collection>.<command> by_id=<...>" per minute
    busiest = {
        s: dict(
            sorted(
                (
                    (
                        f"{k[0]} by_id={k[1]}",
                        round(60.0 * (v - commands_before.get(s, {}).get(k, 0.0)) / elapsed, 1),
                    )
                    for k, v in after.items()
                    if v > commands_before.get(s, {}).get(k, 0.0)
                ),
                key=lambda kv: -kv[1],
            )[:5]
        )
        for s, after in commands_after.items()
    }
    figures = {
        "seconds": elapsed,
        "drained": drained is not None,
        "db_commands_busiest": busiest,
        "cpu": cpu,
        "machine_busy_pct": machine,
        "cores": os.cpu_count(),
        "rss_mb": {name: rss_mb(pid) for name, pid in services.items()},
        "db_commands_per_min": commands_per_min,
    }
    run.say("  " + ", ".join(f"{k} {v:.1f} %" for k, v in cpu.items()) + f"; machine busy {machine:.0f} %")
    for service, top in busiest.items():
        if top:
            run.say(f"  {service} per minute: " + ", ".join(f"{k} {v}" for k, v in top.items()))
    return figures
