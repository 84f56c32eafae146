"""What the chaos run checks at the end, from the services' HTTP APIs and the Kafka topics only."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from chaos_capacity import capacity_history, holder_intervals
from harness import auth, headers_of, read_topic

from aftersales.metrics.exporter import kafka_offsets
from aftersales.routing.domain import HOLDING_STATUSES
from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.settings import ServiceSettings

SLA_THRESHOLDS = (50, 75, 100)
# Routing's slot reconciler settings in the chaos run (SERVICE_ENV in chaos.py), and how long the checks
# wait for it: the grace, then two passes, then a margin.
SLOT_RECONCILE_INTERVAL_S = 5
SLOT_GRACE_S = 20
SLOT_SETTLE_S = SLOT_GRACE_S + 2 * SLOT_RECONCILE_INTERVAL_S + 10
# How long a handler may run in the chaos run (a consumer's, and a timer's, whose lease is renewed while
# it runs); an excess over capacity in the event history shorter than the longer of them and a margin
# can be two handlers' stamps out of order (chaos_capacity.py), a longer one is real.
HANDLER_TIMEOUT_S = 10
TIMER_LEASE_S = 10
TIMER_HANDLER_TIMEOUT_S = 30
CAPACITY_ALLOWANCE_S = max(HANDLER_TIMEOUT_S, TIMER_HANDLER_TIMEOUT_S) + 5


@dataclass
class Findings:
    figures: dict[str, int] = field(default_factory=dict)
    # What a non-zero figure is made of (which tickets), printed under the table to start a diagnosis.
    details: list[str] = field(default_factory=list)
    zero: tuple[str, ...] = (
        "tickets_lost",
        "tickets_duplicated",
        "work_orders_missing",
        "double_dispatch",
        "leaked_slots",
        "missing_slots",
        "over_capacity",
        "timers_lost",
        "timers_fired_twice",
        "kpi_mismatch",
        "dlq_missing",
        "dlq_unexpected",
        "lag_left",
    )

    @property
    def ok(self) -> bool:
        return all(self.figures.get(k, 0) == 0 for k in self.zero)

    def as_dict(self) -> dict[str, int]:
        return dict(self.figures)

    def table(self) -> str:
        rows = [f"{'figure':<24} {'value':>10}  {'must be'}"]
        for key, value in self.figures.items():
            rows.append(f"{key:<24} {value:>10}  {'0' if key in self.zero else ''}")
        rows.append(f"{'verdict':<24} {'PASS' if self.ok else 'FAIL':>10}")
        return "\n".join(rows + self.details)


async def wait_drained(run: Any, timeout_s: float) -> int:
    """Wait until every consumer group of the platform has read everything, 10 s in a row; return lag."""
    settings = ServiceSettings(
        service_name="chaos",
        kafka_bootstrap_servers=run.platform.infra.kafka,
        kafka_topic_prefix=run.platform.prefix,
    )
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    total = -1
    while time.monotonic() < deadline:
        try:
            lag, _ = await kafka_offsets(settings)
            total = sum(lag.values())
        except Exception:
            total = -1
        if total == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 10:
                return 0
        else:
            quiet_since = None
        await asyncio.sleep(1)
    return total if total >= 0 else 1


async def fetch_all(http: httpx.AsyncClient, urls: list[str]) -> list[httpx.Response | None]:
    gate = asyncio.Semaphore(16)

    async def one(url: str) -> httpx.Response | None:
        async with gate:
            for _ in range(5):
                try:
                    return await http.get(url, headers=auth())
                except httpx.HTTPError:
                    await asyncio.sleep(1)
            return None

    return list(await asyncio.gather(*(one(u) for u in urls)))


def answer(r: httpx.Response | None) -> str:
    return "no answer" if r is None else str(r.status_code)


# The KPI counters the metrics service keeps per ticket, each worked out again from the topics: the
# tickets with at least one event of a kind (what the ticket's facts record once, however often it came).
KPI_FROM_EVENTS = ("created", "cancelled", "assigned", "responded", "escalated", "response_breached")


def expected_kpis(tickets: list[Any], assignments: list[Any]) -> dict[str, int]:
    seen: dict[str, set[str]] = {kpi: set() for kpi in KPI_FROM_EVENTS}
    for h, d in tickets:
        kind = h["ce_type"].removeprefix("aftersales.ticket.").removesuffix(".v1")
        if kind in ("created", "cancelled"):
            seen[kind].add(d["ticket_id"])
    for h, d in assignments:
        kind = h["ce_type"].removeprefix("aftersales.assignment.").removesuffix(".v1")
        kpi = {"assigned": "assigned", "accepted": "responded", "escalated": "escalated"}.get(kind)
        if kind == "sla-breached" and d.get("clock") == "first_response":
            kpi = "response_breached"
        elif kind == "resolved" and d.get("escalated"):
            kpi = "escalated"  # a work order resolved after an escalation counts as escalated too
        if kpi is not None:
            seen[kpi].add(d["ticket_id"])
    return {kpi: len(ids & seen["created"]) for kpi, ids in seen.items()}


def kpi_counts(kpis: dict[str, Any]) -> dict[str, int]:
    """The all-time counters of `GET /v1/kpis`."""
    row = next((row["counts"] for row in kpis.get("rows", []) if row["value"] == "all"), {})
    return {k: int(v) for k, v in row.items()}


async def check_kpis(
    run: Any, f: Findings, tickets: list[Any], assignments: list[Any], counts: dict[str, int]
) -> None:
    """Every KPI total equal to the inputs: each counter of KPI_FROM_EVENTS against the topics. The last
    accepts and timers may still be landing when the counters are read, so a difference is looked at
    again after the consumers are quiet and the assignments are read again (three times at most); one
    that stays is a mismatch."""
    platform = run.platform
    expected = expected_kpis(tickets, assignments)
    for _ in range(3):
        if all(counts.get(kpi, 0) == expected[kpi] for kpi in KPI_FROM_EVENTS):
            break
        await wait_drained(run, 60)
        assignments = distinct(
            await read_topic(platform.infra, platform.topic(Topic.ASSIGNMENTS), expect=10**9, timeout_s=30)
        )
        expected = expected_kpis(tickets, assignments)
        async with httpx.AsyncClient(timeout=30) as http:
            counts = kpi_counts((await http.get(f"{platform.url('metrics')}/v1/kpis", headers=auth())).json())
    f.figures["kpi_mismatch"] = 0
    for kpi in KPI_FROM_EVENTS:
        f.figures[f"kpi_{kpi}"] = counts.get(kpi, 0)
        if counts.get(kpi, 0) != expected[kpi]:
            f.figures["kpi_mismatch"] += abs(counts.get(kpi, 0) - expected[kpi])
            f.details.append(
                f"kpi_mismatch: {kpi} counted {counts.get(kpi, 0)}, the topics say {expected[kpi]}"
            )


def judge_capacity(
    f: Findings, tickets: list[Any], assignments: list[Any], techs: list[dict[str, Any]]
) -> None:
    """No technician over capacity at any time of the history (chaos_capacity.py) nor at the end."""
    capacity = {t["id"]: int(t["capacity"]) for t in techs}
    history = capacity_history(holder_intervals(assignments, tickets), capacity)
    over = history.over(CAPACITY_ALLOWANCE_S)
    f.figures["over_capacity"] += len({e.technician_id for e in over})
    # How many technicians were full at some moment: a run whose capacity never binds proves little.
    f.figures["technicians_filled"] = sum(
        1 for tech, peak in history.peak.items() if peak >= capacity.get(tech, 0) > 0
    )
    f.details.extend(
        f"over_capacity: {e.technician_id} held {e.held} of {e.capacity} from {e.start.isoformat()}"
        f" for {'the rest of the run' if e.end is None else f'{e.seconds:.1f} s'}"
        for e in over[:20]
    )


def distinct(records: list[Any]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """The records of a topic as (headers, data), each CloudEvent once (relays may publish twice)."""
    seen: set[str] = set()
    out = []
    for r in records:
        h = headers_of(r)
        if h.get("ce_id") in seen:
            continue
        seen.add(h.get("ce_id", ""))
        try:
            out.append((h, json.loads(r.value or b"{}")))
        except ValueError:
            continue  # the injected poison
    return out


async def fetch_work_orders(
    http: httpx.AsyncClient, routing: str, ids: list[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each ticket's work order from routing's API, and, for each ticket without one, what routing said."""
    orders = await fetch_all(http, [f"{routing}/v1/work-orders/{t}" for t in ids])
    found = {t: r.json() for t, r in zip(ids, orders, strict=True) if r is not None and r.status_code == 200}
    missing = [
        f"work_orders_missing: GET {t} gave {'no answer' if r is None else r.status_code}"
        for t, r in zip(ids, orders, strict=True)
        if t not in found
    ]
    return found, missing


def slot_figures(
    work_orders: dict[str, dict[str, Any]], techs: list[dict[str, Any]], techs_before: list[dict[str, Any]]
) -> dict[str, int]:
    """Capacity slots the technicians hold against the open work orders that hold one. The work orders
    are read one by one between two reads of the technicians; a technician whose count changed between
    those reads had work moving (an escalation, a late timer) while it was read, so his difference is
    not judged in this pass but counted as `slots_moving` (the caller reads again until none moves, and
    judges every technician when work is still moving at its deadline)."""
    held: Counter[str] = Counter()
    for wo in work_orders.values():
        if wo["status"] in {s.value for s in HOLDING_STATUSES} and wo.get("technician_id"):
            held[wo["technician_id"]] += 1
    active = {t["id"]: int(t["active_work_orders"]) for t in techs}
    before = {t["id"]: int(t["active_work_orders"]) for t in techs_before}
    moving = {tid for tid, n in active.items() if before.get(tid) != n}
    return {
        "leaked_slots": sum(max(0, n - held.get(tid, 0)) for tid, n in active.items() if tid not in moving),
        "missing_slots": sum(max(0, n - active.get(tid, 0)) for tid, n in held.items() if tid not in moving),
        "slots_moving": len(moving),
        "over_capacity": sum(1 for t in techs if int(t["active_work_orders"]) > int(t["capacity"])),
        "slots_held": sum(active.values()),
    }


async def verify(run: Any, readers: dict[Topic, int]) -> Findings:
    f = Findings()
    platform, cfg = run.platform, run.cfg
    # SLA timers of the last tickets fire one first-response target (plus a lease) after their creation;
    # timers that fell due during the last blows (a frozen database, a kill) need that long after them too.
    # The consumers catch up meanwhile; what those timers publish is drained after them.
    draining = time.monotonic()
    timers_due_by = draining + cfg.first_response_minutes * 60 + 15
    lag = await wait_drained(run, cfg.drain_timeout_s)
    # How long the consumers took to catch up after the load (the 10 s quiet window included).
    f.figures["drain_s"] = round(time.monotonic() - draining)
    if lag == 0 and timers_due_by > time.monotonic():
        await asyncio.sleep(timers_due_by - time.monotonic())
        lag = await wait_drained(run, cfg.drain_timeout_s)
    f.figures["lag_left"] = lag
    run.work_done.set()  # technicians take no more work: what is read below stays as it is
    f.figures["accepted_by_technicians"] = run.accepts["200"]
    f.figures["accepts_refused"] = sum(n for status, n in run.accepts.items() if status != "200")

    tickets = distinct(
        await read_topic(platform.infra, platform.topic(Topic.TICKETS), expect=10**9, timeout_s=20)
    )
    created = Counter(d["ticket_id"] for h, d in tickets if h["ce_type"] == "aftersales.ticket.created.v1")
    storm_tickets = {
        d["ticket_id"] for h, d in tickets if h["ce_type"].endswith("created.v1") and d["channel"] == "iot"
    }
    accepted = set(run.accepted.values())
    f.figures["requests_sent"] = cfg.tickets
    f.figures["requests_accepted"] = len(accepted)
    f.figures["requests_refused"] = run.refused
    f.figures["storm_tickets"] = len(storm_tickets)
    f.figures["tickets_duplicated"] = sum(n - 1 for n in created.values() if n > 1) + max(
        0, len(storm_tickets) - cfg.devices
    )
    f.figures["tickets_created_on_topic"] = len(created)
    unpublished = sorted(accepted - set(created))
    f.figures["tickets_lost"] = len(unpublished)

    # Timers due by now must fire; ones falling due while the slots settle below are not judged.
    due_before = datetime.now(UTC) - timedelta(minutes=cfg.first_response_minutes, seconds=15)
    async with httpx.AsyncClient(timeout=30) as http:
        ids = sorted(set(created))
        # Every accepted ticket is read back, published or not: a ticket missing from the topic that
        # intake holds is an event stuck in its outbox, one intake does not hold was never stored.
        asked = sorted(set(ids) | accepted)
        urls = [f"{platform.url('intake')}/v1/tickets/{t}" for t in asked]
        intake = dict(zip(asked, await fetch_all(http, urls), strict=True))
        f.details.extend(
            f"tickets_lost: {t} has no created event on the tickets topic; GET gave {answer(intake[t])}"
            for t in unpublished[:20]
        )
        unread = [
            (t, r)
            for t, r in intake.items()
            if t in accepted and t in created and (r is None or r.status_code != 200)
        ]
        f.figures["tickets_lost"] += len(unread)
        f.details.extend(f"tickets_lost: GET {t} gave {answer(r)}" for t, r in unread[:20])
        # A slot a SIGKILL left behind is released by routing's reconciler once it is older than the
        # grace; poll until it has had its passes, so a leak that stays is a leak.
        deadline = time.monotonic() + SLOT_SETTLE_S
        technicians = f"{platform.url('routing')}/v1/technicians"
        while True:
            techs_before = (await http.get(technicians, headers=auth())).json()
            work_orders, missing = await fetch_work_orders(http, platform.url("routing"), ids)
            techs = (await http.get(technicians, headers=auth())).json()
            slots = slot_figures(work_orders, techs, techs_before)
            settled = slots["leaked_slots"] == slots["missing_slots"] == slots["slots_moving"] == 0
            if settled:
                break
            if time.monotonic() > deadline:  # never settled: judge every technician, moving or not
                slots = {**slot_figures(work_orders, techs, techs), "slots_moving": slots["slots_moving"]}
                break
            await asyncio.sleep(2)
        kpis = (await http.get(f"{platform.url('metrics')}/v1/kpis", headers=auth())).json()
    f.figures["work_orders_missing"] = len(missing)
    f.details.extend(missing[:20])
    f.figures.update(slots)

    assignments = distinct(
        await read_topic(platform.infra, platform.topic(Topic.ASSIGNMENTS), expect=10**9, timeout_s=30)
    )
    dispatched: Counter[tuple[str, int]] = Counter()
    fired: Counter[tuple[str, int, str, int]] = Counter()
    for h, d in assignments:
        kind = h["ce_type"].removeprefix("aftersales.assignment.").removesuffix(".v1")
        if kind == "assigned":  # queued, then assigned from the queue, is one dispatch
            dispatched[(d["ticket_id"], d["round"])] += 1
        elif kind in ("sla-warning", "sla-breached"):
            pct = d.get("threshold_pct", 100) if kind == "sla-warning" else 100
            fired[(d["ticket_id"], d["round"], d["clock"], pct)] += 1
    f.figures["double_dispatch"] = sum(n - 1 for n in dispatched.values() if n > 1)
    f.figures["timers_fired_twice"] = sum(n - 1 for n in fired.values() if n > 1)
    f.figures["sla_events"] = len(fired)
    # Every work order never accepted (its first-response clock never stopped), not cancelled, that had
    # been open longer than its first-response target when the checks began must have fired all three
    # first-response thresholds. (An accept may come after a threshold fell due and before its timer
    # fired, which then rightly fires nothing: accepted work orders are not judged.)
    lost = 0
    for t, wo in work_orders.items():
        if t in run.cancelled or wo["status"] in ("cancelled", "closed"):
            continue
        if (wo.get("first_response") or {}).get("stopped_at") is not None:
            continue
        if datetime.fromisoformat(wo["started_at"]) > due_before:
            continue
        missing = [pct for pct in SLA_THRESHOLDS if (t, wo["round"], "first_response", pct) not in fired]
        if missing and lost < 60:  # the first ones start a diagnosis; thousands of lines would not
            f.details.append(
                f"timers_lost: {t} round {wo['round']} first_response {missing} (started {wo['started_at']},"
                f" status {wo['status']}, technician {wo.get('technician_id')}, judged from {due_before})"
            )
        lost += len(missing)
    f.figures["timers_lost"] = lost

    f.figures["tickets_assigned"] = len({ticket for ticket, _ in dispatched})
    judge_capacity(f, tickets, assignments, techs)
    await check_kpis(run, f, tickets, assignments, kpi_counts(kpis))

    expected_dlq = 0
    actual_dlq = 0
    unexpected = 0
    for topic, groups in readers.items():
        injected = set(run.poison_ids.get(topic.value, []))
        parked = await read_topic(
            platform.infra, dead_letter_topic(platform.topic(topic)), expect=10**9, timeout_s=10
        )
        # A consumer killed after parking a message but before committing parks it again when it comes
        # back (at-least-once, like every other topic): count each (message, consumer group) once.
        copies = {
            (headers_of(r).get("ce_id", ""), headers_of(r).get("dlq_consumer_group", "")) for r in parked
        }
        per_id = Counter(ce_id for ce_id, _ in copies)
        expected_dlq += len(injected) * groups
        actual_dlq += sum(n for ce_id, n in per_id.items() if ce_id in injected)
        unexpected += sum(n for ce_id, n in per_id.items() if ce_id not in injected)
        unexpected += sum(max(0, n - groups) for ce_id, n in per_id.items() if ce_id in injected)
        f.figures["dlq_redelivered_copies"] = (
            f.figures.get("dlq_redelivered_copies", 0) + len(parked) - len(copies)
        )
    f.figures["dlq_expected"] = expected_dlq
    f.figures["dlq_parked"] = actual_dlq
    f.figures["dlq_missing"] = max(0, expected_dlq - actual_dlq)
    f.figures["dlq_unexpected"] = unexpected
    return f
