"""The chaos run: tickets and IoT alert storms through all five services, technicians accepting their
share of the work orders as they are assigned (the rest warn, breach and escalate), while the services
are SIGKILLed at random moments and restarted, the broker is restarted and the database is frozen;
poison messages on every consumed topic. At the end, from public faces and the topics only: every
accepted ticket stored once, every open work order held by exactly one technician, no technician over
capacity, no slot held by a closed work order, no SLA timer lost or fired twice, KPIs equal to the
inputs, and the DLQs holding exactly the injected poison.

    python tests/integration/chaos.py [--tickets N] [--rate R] [--alerts A] [--kills K]
        [--no-kafka-restart] [--db-pause S] [--accept-share F]

(`make chaos` runs the full size; `tests/integration/test_chaos.py` a short one inside `make test`.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from chaos_checks import (
    HANDLER_TIMEOUT_S,
    SLOT_GRACE_S,
    SLOT_RECONCILE_INTERVAL_S,
    TIMER_HANDLER_TIMEOUT_S,
    TIMER_LEASE_S,
    Findings,
    verify,
)
from harness import INFRA, PIPELINE_SERVICE_NAMES, Platform, auth, headers_of, start_infra

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.requests import IotSignal, TicketRequest
from aftersales.shared.envelope import new_event

REGION = "310000/310100/310104"
ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
CACHE = Path(os.environ.get("AFTERSALES_CACHE_DIR", Path.home() / ".cache" / "aftersales"))
# The consumer groups that read each topic (one poison message is parked once per group).
# TICKETS: routing, followup, feedback, metrics, intake's own-stream group (search index, retention);
# ASSIGNMENTS: followup, feedback, metrics, intake's timeline and own-stream group; FEEDBACK: metrics,
# intake's timeline, feedback itself and its retention schedule; FOLLOWUPS: metrics, intake's timeline;
# PRIVACY: intake's erasure and export groups, followup, feedback; FIELDWORK: routing, metrics.
READERS = {
    Topic.REQUESTS: 1,
    Topic.TICKETS: 5,
    Topic.ASSIGNMENTS: 5,
    Topic.FOLLOWUPS: 2,
    Topic.FEEDBACK: 4,
    Topic.PRIVACY: 4,
    Topic.FIELDWORK: 2,
}
SERVICE_ENV = {
    "PUBLISH_REPORTS": "false",
    "TIMER_LEASE_S": str(TIMER_LEASE_S),
    "TIMER_HANDLER_TIMEOUT_S": str(TIMER_HANDLER_TIMEOUT_S),
    "CONSUMER_RETRY_BUDGET_S": "20",
    "CONSUMER_HANDLER_TIMEOUT_S": str(HANDLER_TIMEOUT_S),
    "MONGODB_SOCKET_TIMEOUT_S": "10",
    "SLOT_RECONCILE_INTERVAL_S": str(SLOT_RECONCILE_INTERVAL_S),
    "SLOT_GRACE_S": str(SLOT_GRACE_S),
}


@dataclass
class Config:
    tickets: int = 20_000
    rate_per_s: float = 40.0
    alerts: int = 5_000
    devices: int = 50
    kills_per_service: int = 3
    restart_kafka: bool = True
    db_pause_s: float = 20.0
    poison_per_topic: int = 3
    technicians: int = 40
    capacity: int = 1000
    first_response_minutes: float = 1.0
    drain_timeout_s: float = 600.0
    # The share of work orders their technician accepts as the assignment arrives (by ticket id, so a
    # run is repeatable); the others run their SLA clocks out: the warnings, the breach, the escalation.
    accept_share: float = 0.8


@dataclass
class Run:
    platform: Platform
    cfg: Config
    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> ticket id
    cancelled: set[str] = field(default_factory=set)
    refused: int = 0
    poison_ids: dict[str, list[str]] = field(default_factory=dict)
    chaos_log: list[str] = field(default_factory=list)
    work_done: asyncio.Event = field(default_factory=asyncio.Event)  # technicians stop taking work
    accepts: Counter[str] = field(default_factory=Counter)  # what the technicians' accepts answered

    def accepts_work(self, ticket_id: str) -> bool:
        """True for the work orders a technician accepts (the same ones in every run of this ticket id)."""
        return zlib.crc32(ticket_id.encode()) % 1000 < self.cfg.accept_share * 1000


async def setup(run: Run) -> None:
    platform, cfg = run.platform, run.cfg
    await platform.start_ready(*PIPELINE_SERVICE_NAMES, **SERVICE_ENV)
    routing = platform.url("routing")
    grid = {
        "id": "g-chaos",
        "name": "chaos",
        "region_path": REGION.split("/"),
        "calendar": {"timezone": "UTC", "weekly": ALWAYS},
        "supervisor_id": "sup-chaos",
        "surge": {"backlog_threshold": 1_000_000, "capacity_factor": 1.5, "automatic": False},
    }
    targets = [
        {
            "priority": p,
            "customer_tier": tier,
            "first_response_minutes": cfg.first_response_minutes,
            "resolution_minutes": 24 * 60,
        }
        for p in ("P1", "P2", "P3", "P4")
        for tier in ("standard", "gold", "key_account")
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        (await http.put(f"{routing}/v1/grids/g-chaos", json=grid, headers=auth())).raise_for_status()
        (
            await http.put(f"{routing}/v1/sla-policies", json={"targets": targets}, headers=auth())
        ).raise_for_status()
        for t in range(cfg.technicians):
            tier = 2 if t % 4 == 0 else 1
            tech = {
                "id": f"ct-{t}",
                "name": f"ct {t}",
                "grid_id": "g-chaos",
                "tier": tier,
                "capacity": cfg.capacity,
            }
            r = await http.put(f"{routing}/v1/technicians/ct-{t}", json=tech, headers=auth())
            r.raise_for_status()


def ticket_body(i: int) -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {"name": f"Chaos {i}", "email": f"chaos{i}@example.com", "region_code": REGION},
        "product": {"device_type": "air_conditioner", "purchase_date": "2025-01-01"},
        "title": "Not cooling",
        "description": "The unit blows warm air.",
    }


async def submit(run: Run, http: httpx.AsyncClient, i: int, deadline: float) -> None:
    """POST one ticket until it is accepted (retrying with the same key through kills), then maybe cancel."""
    key = f"chaos-{run.platform.prefix}-{i}"
    headers = {**auth("dev-web-token"), "Idempotency-Key": key}
    while time.monotonic() < deadline:
        try:
            r = await http.post(
                f"{run.platform.url('intake')}/v1/tickets", json=ticket_body(i), headers=headers
            )
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if r.status_code in (200, 201):
            run.accepted[key] = r.json()["id"]
            break
        if r.status_code < 500 and r.status_code != 429:
            run.refused += 1
            return
        await asyncio.sleep(0.5)
    if key in run.accepted and i % 20 == 0:  # one in twenty is cancelled by the channel
        tid = run.accepted[key]
        while time.monotonic() < deadline:
            try:
                r = await http.post(
                    f"{run.platform.url('intake')}/v1/tickets/{tid}/cancel",
                    json={"reason": "customer withdrew"},
                    headers=auth("dev-web-token"),
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.5)
                continue
            if r.status_code == 200 or r.status_code == 409:  # 409: already past cancellable, or done
                if r.status_code == 200:
                    run.cancelled.add(tid)
                break
            await asyncio.sleep(0.5)


async def load(run: Run) -> None:
    cfg = run.cfg
    deadline = time.monotonic() + cfg.tickets / cfg.rate_per_s * 4 + 300
    start = time.monotonic()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        tasks = []
        gate = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with gate:
                await submit(run, http, i, deadline)

        for i in range(cfg.tickets):
            delay = start + i / cfg.rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)


async def storms(run: Run) -> None:
    """IoT alerts for `devices` devices, keyed by serial, at a steady pace over the load."""
    cfg = run.cfg

    async def new_producer() -> AIOKafkaProducer:
        kafka = run.platform.infra.kafka
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True)
        try:
            await producer.start()
        except BaseException:  # the broker is still down: close what start() opened, or it leaks
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    producer = await new_producer()
    try:
        base = TicketRequest.model_validate(
            {
                **ticket_body(0),
                "channel": "iot",
                "product": {"device_type": "chiller", "serial": "S"},
                "iot": {"fault_code": "E42", "severity": 2, "observed_at": time.time()},
            }
        )
        per_s = max(cfg.alerts / (cfg.tickets / cfg.rate_per_s), 1.0)
        for i in range(cfg.alerts):
            serial = f"CH-{run.platform.prefix}-{i % cfg.devices}"
            signal_ = IotSignal(fault_code="E42", severity=2, observed_at=time.time())  # type: ignore[arg-type]
            request = base.model_copy(
                update={"iot": signal_, "product": base.product.model_copy(update={"serial": serial})}
            )
            event = new_event(request, source="/gateways/chaos", subject=serial)
            headers = [(k, v.encode()) for k, v in event.headers().items()]
            while True:
                try:
                    topic = run.platform.topic(Topic.REQUESTS)
                    send = producer.send_and_wait(topic, event.value(), key=serial.encode(), headers=headers)
                    await asyncio.wait_for(send, timeout=15)
                    break
                except Exception:
                    # The broker is being restarted; aiokafka's idempotent producer may not recover
                    # from it by itself (aiokafka issue 1018), so a new one takes over.
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), timeout=5)
                    await asyncio.sleep(1.0)
                    with contextlib.suppress(Exception):
                        producer = await new_producer()
            await asyncio.sleep(1 / per_s)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def poison(run: Run, wave: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=run.platform.infra.kafka, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for topic in READERS:
            ids = [f"poison-{wave}-{topic.value}-{n}" for n in range(run.cfg.poison_per_topic)]
            run.poison_ids.setdefault(topic.value, []).extend(ids)
            for ce_id in ids:
                headers = {
                    "ce_specversion": "1.0",
                    "ce_id": ce_id,
                    "ce_source": "/chaos",
                    "ce_type": "aftersales.ticket.created.v1",
                    "ce_time": "2026-11-30T00:00:00Z",
                    "content-type": "application/json",
                }
                await producer.send_and_wait(
                    run.platform.topic(topic),
                    b"{this is not json",
                    key=ce_id.encode(),
                    headers=[(k, v.encode()) for k, v in headers.items()],
                )
    finally:
        await producer.stop()


async def technicians(run: Run) -> None:
    """Technicians accept their share of work orders as the assignments arrive on the topic (through
    the kills and the broker restart), until `run.work_done` is set; the accepts in flight then finish."""
    if run.cfg.accept_share <= 0:
        return
    seen: set[tuple[str, int]] = set()
    accepting: set[asyncio.Task[None]] = set()
    consumer: AIOKafkaConsumer | None = None
    async with httpx.AsyncClient(timeout=30) as http:
        while not run.work_done.is_set():
            try:
                if consumer is None:  # from the start: what was read before is in `seen`
                    consumer = AIOKafkaConsumer(
                        run.platform.topic(Topic.ASSIGNMENTS),
                        bootstrap_servers=run.platform.infra.kafka,
                        auto_offset_reset="earliest",
                        enable_auto_commit=False,
                        group_id=None,
                    )
                    await consumer.start()
                batch = await consumer.getmany(timeout_ms=500)
            except Exception:  # the broker is being restarted: a new consumer reads on
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                consumer = None
                await asyncio.sleep(1.0)
                continue
            for record in (r for records in batch.values() for r in records):
                if headers_of(record).get("ce_type") != "aftersales.assignment.assigned.v1":
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    data = json.loads(record.value or b"")
                    work = (str(data["ticket_id"]), int(data["round"]))
                    if work not in seen and run.accepts_work(work[0]):
                        seen.add(work)
                        task = asyncio.create_task(accept(run, http, work[0]))
                        accepting.add(task)
                        task.add_done_callback(accepting.discard)
        if consumer is not None:
            await consumer.stop()
        await asyncio.gather(*accepting)


async def accept(run: Run, http: httpx.AsyncClient, ticket_id: str) -> None:
    """Accept one work order, retrying through kills; a 409 (escalated, cancelled, accepted by a retry
    whose answer was lost) or 403 (taken from this technician) ends it: the work moved on."""
    url = f"{run.platform.url('routing')}/v1/work-orders/{ticket_id}/accept"
    for _ in range(120):
        try:
            r = await http.post(url, headers=auth())
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if r.status_code < 500 and r.status_code != 429:
            run.accepts[str(r.status_code)] += 1
            return
        await asyncio.sleep(0.5)
    run.accepts["gave up"] += 1


def _pid(name: str) -> int:
    return int((CACHE / "run" / f"{name}.pid").read_text().strip())


async def chaos(run: Run, window_s: float) -> None:
    """Kill each service `kills_per_service` times at random moments; restart Kafka; freeze the DB."""
    cfg = run.cfg
    rng = random.Random(run.platform.prefix)
    actions: list[tuple[float, str]] = [
        (rng.uniform(0.05, 0.9) * window_s, f"kill:{s}")
        for s in PIPELINE_SERVICE_NAMES
        for _ in range(cfg.kills_per_service)
    ]
    if cfg.restart_kafka:
        actions.append((0.45 * window_s, "kafka"))
    if cfg.db_pause_s > 0:
        actions.append((0.7 * window_s, "db"))
    start = time.monotonic()
    for at, action in sorted(actions):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        run.chaos_log.append(f"{time.monotonic() - start:6.1f}s {action}")
        if action.startswith("kill:"):
            service = action.split(":", 1)[1]
            run.platform.services[service].kill()
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            proc = run.platform.start(service, **SERVICE_ENV)
            await proc.wait_ready(timeout_s=120)
        elif action == "kafka":
            await asyncio.to_thread(
                subprocess.run, ["bash", str(INFRA), "stop", "kafka"], check=True, timeout=120
            )
            await asyncio.to_thread(
                subprocess.run, ["bash", str(INFRA), "start", "kafka"], check=True, timeout=300
            )
        else:
            pid = _pid("db")
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(cfg.db_pause_s)
            finally:
                os.kill(pid, signal.SIGCONT)


async def execute(cfg: Config) -> tuple[Run, Findings]:
    processes: list[Any] = []
    platform = Platform(start_infra(), processes)
    run = Run(platform, cfg)
    try:
        await setup(run)
        window_s = cfg.tickets / cfg.rate_per_s
        await poison(run, 1)
        work = asyncio.create_task(technicians(run))
        await asyncio.gather(load(run), storms(run), chaos(run, window_s))
        await poison(run, 2)  # and once more after the storm
        findings = await verify(run, READERS)  # sets work_done once the platform drained
        run.work_done.set()
        await work
        return run, findings
    finally:
        for proc in processes:
            proc.stop(timeout_s=20)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so `execute` stops every service it started (its finally block)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a broker restart is expected here
    parser = argparse.ArgumentParser(description="the chaos run")
    parser.add_argument("--tickets", type=int, default=Config.tickets)
    parser.add_argument("--rate", type=float, default=Config.rate_per_s)
    parser.add_argument("--alerts", type=int, default=Config.alerts)
    parser.add_argument("--kills", type=int, default=Config.kills_per_service)
    parser.add_argument("--technicians", type=int, default=Config.technicians)
    parser.add_argument(
        "--capacity",
        type=int,
        default=Config.capacity,
        help="work orders each technician may hold; below tickets/technicians the rest queue",
    )
    parser.add_argument("--no-kafka-restart", action="store_true")
    parser.add_argument("--db-pause", type=float, default=Config.db_pause_s)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=Config.drain_timeout_s,
        help="seconds the consumers get to catch up after the load before lag_left is judged",
    )
    parser.add_argument(
        "--accept-share",
        type=float,
        default=Config.accept_share,
        help="share of work orders their technician accepts (0: every SLA clock runs out)",
    )
    args = parser.parse_args()
    cfg = Config(
        tickets=args.tickets,
        rate_per_s=args.rate,
        alerts=args.alerts,
        kills_per_service=args.kills,
        technicians=args.technicians,
        capacity=args.capacity,
        restart_kafka=not args.no_kafka_restart,
        db_pause_s=args.db_pause,
        accept_share=args.accept_share,
        drain_timeout_s=args.drain_timeout,
    )
    run, findings = asyncio.run(execute(cfg))
    print("\n".join(run.chaos_log))
    print(findings.table())
    print(json.dumps(findings.as_dict()))
    return 0 if findings.ok else 1


if __name__ == "__main__":
    sys.exit(main())
