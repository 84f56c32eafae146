"""Metrics service as a real process: a scenario with known inputs gives exactly the KPIs computed here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from harness import Infra, Platform, auth, data_of, headers_of, read_to_end, wait_until
from pydantic import BaseModel

from aftersales.shared.contracts import Topic, event_type_of
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import (
    ComplaintOpened,
    ComplaintState,
    InspectionPublished,
    SlaBreached,
    SlaClock,
    SurveySubmitted,
    TicketCreated,
    TicketReopened,
    VisitCompleted,
    VisitKind,
    VisitOutcome,
    VisitScheduled,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderPending,
    WorkOrderResolved,
    WorkOrderStarted,
)
from aftersales.shared.envelope import CloudEvent, new_event

DAY = datetime(2026, 11, 18, 8, 0, tzinfo=UTC)  # a Wednesday of ISO week 2026-W47
SOURCES = {
    Topic.TICKETS: "/aftersales/intake",
    Topic.ASSIGNMENTS: "/aftersales/routing",
    Topic.FOLLOWUPS: "/aftersales/followup",
    Topic.FEEDBACK: "/aftersales/feedback",
}


def m(minutes: float) -> datetime:
    return DAY + timedelta(minutes=minutes)


@dataclass
class TicketPlan:
    """One ticket of the scenario, in minutes after DAY; the test derives both events and expectations."""

    tid: str
    grid: str
    tech: str
    channel: Channel
    created: int
    assigned: int
    accepted: int | None = None
    resolved: int | None = None
    pauses: list[tuple[int, int]] = field(default_factory=list)
    escalated_to: tuple[int, str] | None = None
    reopened: tuple[int, int] | None = None  # (reopened at, resolved again at)
    response_breached: bool = False
    survey: tuple[int, int | None] | None = None  # csat, nps
    complaint_deadline: int | None = None
    visit: tuple[int, int, int | None] | None = None  # scheduled at, due at, completed at


PLANS = [
    TicketPlan(
        "T1", "G-A", "tech-a1", Channel.PHONE, 0, 2, 10, 70, survey=(5, 10), visit=(71, 71 + 1440, 300)
    ),
    TicketPlan(
        "T2",
        "G-A",
        "tech-a1",
        Channel.WEB,
        5,
        6,
        35,
        125,
        pauses=[(40, 60)],
        response_breached=True,
        survey=(3, 7),
        visit=(126, 200, None),
    ),
    TicketPlan(
        "T3",
        "G-B",
        "tech-b1",
        Channel.PHONE,
        10,
        12,
        20,
        50,
        reopened=(200, 260),
        survey=(2, 3),
        complaint_deadline=270,
    ),
    TicketPlan("T4", "G-B", "tech-b1", Channel.IOT, 15, 16, 18, 90, escalated_to=(30, "tech-b2")),
    TicketPlan("T5", "G-A", "tech-a2", Channel.WEB, 20, 22),
]


def events_of(p: TicketPlan) -> list[tuple[Topic, BaseModel]]:
    base: dict[str, Any] = dict(
        ticket_id=p.tid,
        channel=p.channel,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P2,
        customer_id=f"C-{p.tid}",
        region_code="310000",
        device_type="boiler",
    )
    a: dict[str, Any] = dict(ticket_id=p.tid, grid_id=p.grid)
    out: list[tuple[Topic, BaseModel]] = [
        (Topic.TICKETS, TicketCreated(**base, created_at=m(p.created), rules_version="r1")),
        (
            Topic.ASSIGNMENTS,
            WorkOrderAssigned(
                **a,
                occurred_at=m(p.assigned),
                technician_id=p.tech,
                team_id="team-1",
                tier=1,
                via="direct",
                priority=Priority.P2,
                category=Category.HARDWARE_FAULT,
            ),
        ),
    ]
    if p.accepted is not None:
        out.append(
            (Topic.ASSIGNMENTS, WorkOrderAccepted(**a, occurred_at=m(p.accepted), technician_id=p.tech))
        )
    for start, end in p.pauses:
        out.append((Topic.ASSIGNMENTS, WorkOrderPending(**a, occurred_at=m(start), technician_id=p.tech)))
        out.append((Topic.ASSIGNMENTS, WorkOrderStarted(**a, occurred_at=m(end), technician_id=p.tech)))
    resolver = p.tech
    if p.escalated_to is not None:
        at, resolver = p.escalated_to
        out.append(
            (
                Topic.ASSIGNMENTS,
                WorkOrderEscalated(
                    **a,
                    occurred_at=m(at),
                    level="tier2",
                    reason="technician",
                    from_technician_id=p.tech,
                    to_technician_id=resolver,
                ),
            )
        )
    if p.response_breached:
        out.append(
            (
                Topic.ASSIGNMENTS,
                SlaBreached(
                    **a,
                    occurred_at=m(p.created + 15),
                    clock=SlaClock.FIRST_RESPONSE,
                    due_at=m(p.created + 15),
                ),
            )
        )
    if p.resolved is not None:
        out.append(
            (
                Topic.ASSIGNMENTS,
                WorkOrderResolved(
                    **a,
                    occurred_at=m(p.resolved),
                    technician_id=resolver,
                    resolution_code="fixed",
                    priority=Priority.P2,
                    category=Category.HARDWARE_FAULT,
                    escalated=p.escalated_to is not None,
                ),
            )
        )
    if p.reopened is not None:
        again, fixed = p.reopened
        out.append(
            (
                Topic.TICKETS,
                TicketReopened(**base, reason="still broken", reopen_count=1, reopened_at=m(again)),
            )
        )
        out.append(
            (
                Topic.ASSIGNMENTS,
                WorkOrderResolved(
                    **{**a, "round": 2},
                    occurred_at=m(fixed),
                    technician_id=resolver,
                    resolution_code="fixed",
                    priority=Priority.P2,
                    category=Category.HARDWARE_FAULT,
                ),
            )
        )
    if p.survey is not None:
        csat, nps = p.survey
        out.append(
            (
                Topic.FEEDBACK,
                SurveySubmitted(
                    survey_id=f"S-{p.tid}",
                    ticket_id=p.tid,
                    round=1,
                    csat=csat,
                    nps=nps,
                    occurred_at=m((p.resolved or 0) + 100),
                ),
            )
        )
    if p.complaint_deadline is not None:
        out.append(
            (
                Topic.FEEDBACK,
                ComplaintOpened(
                    complaint_id=f"K-{p.tid}",
                    ticket_id=p.tid,
                    state=ComplaintState.RECEIVED,
                    occurred_at=m(210),
                    source="api",
                    deadline_at=m(p.complaint_deadline),
                ),
            )
        )
    if p.visit is not None:
        sched, due, done = p.visit
        v: dict[str, Any] = dict(visit_id=f"V-{p.tid}", ticket_id=p.tid, kind=VisitKind.CALLBACK)
        out.append((Topic.FOLLOWUPS, VisitScheduled(**v, occurred_at=m(sched), due_at=m(due))))
        if done is not None:
            out.append(
                (
                    Topic.FOLLOWUPS,
                    VisitCompleted(**v, occurred_at=m(done), outcome=VisitOutcome.CONFIRMED_RESOLVED),
                )
            )
    return out


def expected_by_grid(plans: Sequence[TicketPlan]) -> dict[str, dict[str, Any]]:
    """The KPIs of each grid, computed from the plans directly (not through the service's code)."""
    out: dict[str, dict[str, Any]] = {}
    for grid in sorted({p.grid for p in plans}):
        ps = [p for p in plans if p.grid == grid]
        responded = [p for p in ps if p.accepted is not None]
        resolved = [p for p in ps if p.resolved is not None]
        breached = [p for p in ps if p.response_breached]
        surveys = [p.survey for p in ps if p.survey]
        nps = [s[1] for s in surveys if s[1] is not None]
        visits = [p.visit for p in ps if p.visit]

        def paused_before(p: TicketPlan, t: int) -> int:
            return sum(min(e, t) - s for s, e in p.pauses if s < t)

        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        out[grid] = {
            "created": len(ps),
            "backlog": sum(1 for p in ps if p.resolved is None),
            "avg_first_response_s": round(
                sum(
                    (p.accepted - p.created - paused_before(p, p.accepted)) * 60
                    for p in responded
                    if p.accepted
                )
                / len(responded),
                3,
            ),
            "avg_resolution_s": round(
                sum((p.resolved - p.created) * 60 for p in resolved if p.resolved) / len(resolved), 3
            ),
            "avg_resolution_net_s": round(
                sum(
                    (p.resolved - p.created - paused_before(p, p.resolved)) * 60
                    for p in resolved
                    if p.resolved
                )
                / len(resolved),
                3,
            ),
            "resolution_rate": ratio(len(resolved), len(ps)),
            "first_contact_resolution_rate": ratio(
                sum(1 for p in resolved if not p.escalated_to and not p.reopened), len(resolved)
            ),
            "reopen_rate": ratio(sum(1 for p in resolved if p.reopened), len(resolved)),
            "sla_response_compliance": ratio(
                len({p.tid for p in responded} | {p.tid for p in breached}) - len(breached),
                len({p.tid for p in responded} | {p.tid for p in breached}),
            ),
            "csat_average": round(sum(s[0] for s in surveys) / len(surveys), 4) if surveys else None,
            "nps": round((sum(1 for n in nps if n >= 9) - sum(1 for n in nps if n <= 6)) * 100 / len(nps), 2)
            if nps
            else None,
            "complaint_rate": ratio(sum(1 for p in ps if p.complaint_deadline is not None), len(ps)),
            "followup_completion_rate": ratio(sum(1 for v in visits if v[2] is not None), len(visits)),
        }
    return out


async def produce_all(infra: Infra, platform: Platform, events: Sequence[tuple[Topic, CloudEvent]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, event in events:
            await producer.send_and_wait(
                platform.topic(topic.value),
                event.value(),
                key=event.key,
                headers=[(k, v.encode()) for k, v in event.headers().items()],
            )
    finally:
        await producer.stop()


def scenario_events() -> list[tuple[Topic, CloudEvent]]:
    """Every plan's events as CloudEvents; T4's arrive in reverse order and one T1 event twice."""
    out: list[tuple[Topic, CloudEvent]] = []
    for p in PLANS:
        evs = [(t, new_event(d, source=SOURCES[t], subject=p.tid)) for t, d in events_of(p)]
        if p.tid == "T4":
            evs.reverse()  # out-of-order delivery: resolved before created
        if p.tid == "T1":
            evs.append(evs[-3])  # a redelivery of the same CloudEvent (same ce_id)
        out.extend(evs)
    return out


async def handled_all(url: str, platform: Platform, count: int) -> bool:
    """True once the service handled `count` events of this test's topics (redeliveries included)."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    handled = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aftersales_events_handled_total{") and f'topic="{platform.prefix}' in line
    )
    return handled >= count


async def snapshot_after(url: str, instant: float) -> float | None:
    """Return when the metrics service's KPI snapshot was refreshed, if that is after `instant`."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    [line] = [x for x in text.splitlines() if x.startswith("aftersales_kpi_snapshot_timestamp_seconds ")]
    refreshed = float(line.split()[1])
    return refreshed if refreshed > instant else None


async def kpi_rows(url: str, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{url}/v1/kpis", params=params, headers=auth("dev-supervisor-token"))
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


async def test_kpis_equal_the_figures_computed_from_the_scenario(infra: Infra, platform: Platform) -> None:
    svc = (await platform.start_ready("metrics", SNAPSHOT_INTERVAL_S="1", PUBLISH_REPORTS="false"))["metrics"]
    events = scenario_events()
    await produce_all(infra, platform, events)
    expected = expected_by_grid(PLANS)
    week = {"from": "2026-11-16", "to": "2026-11-22"}

    await wait_until("every scenario event handled", lambda: handled_all(svc.url, platform, len(events)), 45)
    handled_at = datetime.now(UTC).timestamp()
    rows = {r["value"]: r for r in (await kpi_rows(svc.url, group_by="grid", **week))["rows"]}
    for grid, want in expected.items():
        row = rows[grid]
        assert row["counts"]["created"] == want["created"], grid
        assert row["backlog"] == want["backlog"], grid
        for name, value in want.items():
            if name in ("created", "backlog"):
                continue
            assert row["kpis"][name] == value, f"{grid} {name}: {row['kpis'][name]} != {value}"

    # The same figures by day and by ISO week; every ticket lives on one day of W47.
    weekly = await kpi_rows(svc.url, group_by="all", period="week", **week)
    assert [(r["value"], r["period"], r["counts"]["created"]) for r in weekly["rows"]] == [
        ("all", "2026-W47", 5)
    ]
    daily = await kpi_rows(svc.url, group_by="channel", period="day", **week)
    by_channel = {r["value"]: r["counts"]["created"] for r in daily["rows"] if r["period"] == "2026-11-18"}
    assert by_channel == {
        c.value: sum(1 for p in PLANS if p.channel == c) for c in {p.channel for p in PLANS}
    }

    # Technician performance (绩效考核): the escalated ticket belongs to the technician who resolved it.
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(
            f"{svc.url}/v1/technicians/tech-b2/performance", params=week, headers=auth("dev-supervisor-token")
        )
        assert r.status_code == 200, r.text
        perf = r.json()
        assert perf["counts"]["resolved"] == 1
        assert perf["kpis"]["first_contact_resolution_rate"] == 0.0
        assert perf["kpis"]["avg_resolution_s"] == (90 - 15) * 60
        r = await client.get(
            f"{svc.url}/v1/technicians/tech-b2/performance", headers=auth("dev-technician-token")
        )
        assert r.status_code == 403
        r = await client.get(f"{svc.url}/v1/kpis", params={"group_by": "planet"}, headers=auth())
        assert r.status_code == 422 and "group_by" in r.text

        # The W47 inspection: G-B misses FCR and CSAT targets; T3's complaint and T2's call are overdue.
        r = await client.get(
            f"{svc.url}/v1/reports/inspections", params={"period": "2026-W47"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        report = r.json()
        kinds = {(f["kind"], f["subject"]) for f in report["findings"]}
        assert ("grid_under_target", "G-B") in kinds
        overdue = {f["kind"]: f["figures"] for f in report["findings"] if f["kind"].startswith("overdue_")}
        assert overdue["overdue_complaints"]["ids"] == ["K-T3"]
        assert overdue["overdue_followups"]["ids"] == ["V-T2"]
        assert report["summary"]["tickets_created"] == len(PLANS)
        md = await client.get(
            f"{svc.url}/v1/reports/inspections",
            params={"period": "2026-W47", "format": "markdown"},
            headers=auth(),
        )
        assert md.status_code == 200 and "# Inspection report 2026-W47" in md.text and "K-T3" in md.text

        # Publishing is once per period, through the outbox to aftersales.reports.v1.
        first = await client.post(f"{svc.url}/v1/reports/inspections/2026-W47/publish", headers=auth())
        again = await client.post(f"{svc.url}/v1/reports/inspections/2026-W47/publish", headers=auth())
        assert first.status_code == again.status_code == 200
        assert (first.json()["published"], again.json()["published"]) == (True, False)
    # /metrics carries the store-derived business series with the same figures, once a snapshot has
    # been taken wholly after the scenario was handled (the one after the first to end after it).
    first = await wait_until("a KPI snapshot after the scenario", lambda: snapshot_after(svc.url, handled_at))
    await wait_until("the next KPI snapshot", lambda: snapshot_after(svc.url, first))
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{svc.url}/metrics")).text
    created_total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("aftersales_kpi_tickets_created_total{")
    )
    assert created_total == len(PLANS)
    assert 'aftersales_kpi_backlog_tickets{grid="G-A"} 1.0' in text
    assert "aftersales_kpi_complaints_overdue 1.0" in text

    # Stopped (its outbox flushed), the reports topic holds every report it published: exactly one.
    assert svc.stop() == 0
    [record] = await read_to_end(infra, platform.topic(Topic.REPORTS.value))
    assert headers_of(record)["ce_type"] == event_type_of(InspectionPublished).type
    published = data_of(record)
    assert (published["period"], published["findings"]) == ("2026-W47", len(report["findings"]))
    assert published["period_start"] == "2026-11-16" and published["kind"] == "week"
