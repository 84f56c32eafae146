"""On-site (fieldwork) KPIs: first-time fix, travel and work time, appointments kept, parts per resolution.

The fold and the rollups as pure functions (any order, redeliveries, late visits), the Prometheus series
they feed, and the whole path in-process: fieldwork CloudEvents delivered to metrics, read back from
GET /v1/kpis by grid and by technician."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric
from pydantic import BaseModel

from aftersales.metrics.app import Settings, build
from aftersales.metrics.domain import add_counters, kpis, stock_figures
from aftersales.metrics.facts import Facts, subject_of
from aftersales.metrics.fold import fold
from aftersales.metrics.metrics import KpiCollector, Snapshot
from aftersales.metrics.rollups import ALLTIME, Contribution, contribution, delta
from aftersales.shared.contracts import Topic, event_type_of
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import (
    TicketCreated,
    TicketReopened,
    WorkOrderAssigned,
    WorkOrderResolved,
)
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentNoShow,
    ServiceReportSigned,
    StockConsumed,
    StockLow,
    StockReceived,
    VisitCheckedIn,
    VisitCheckedOut,
    VisitDeparted,
)
from aftersales.shared.testing import FAST, ServiceUnderTest, contract_event, in_process

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DAY = {"from": "2026-11-24", "to": "2026-11-24"}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def created(tid: str) -> TicketCreated:
    return TicketCreated(
        ticket_id=tid,
        channel=Channel.PHONE,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P2,
        customer_id="C1",
        region_code="310000",
        device_type="boiler",
        created_at=at(0),
        rules_version="r1",
    )


def assigned(tid: str, tech: str = "tech-1", grid: str = "G1", minutes: float = 2) -> WorkOrderAssigned:
    return WorkOrderAssigned(
        ticket_id=tid,
        grid_id=grid,
        occurred_at=at(minutes),
        technician_id=tech,
        team_id="team-a",
        tier=1,
        via="direct",
        priority=Priority.P2,
        category=Category.HARDWARE_FAULT,
    )


def resolved(tid: str, minutes: float, tech: str = "tech-1", grid: str = "G1", rnd: int = 1) -> BaseModel:
    return WorkOrderResolved(
        ticket_id=tid,
        grid_id=grid,
        round=rnd,
        occurred_at=at(minutes),
        technician_id=tech,
        resolution_code="fixed",
        priority=Priority.P2,
        category=Category.HARDWARE_FAULT,
    )


def visit(
    tid: str, appointment: str, start: float, travel_s: int | None, work_s: int, tech: str = "tech-1"
) -> list[BaseModel]:
    """A visit booked, departed, checked in at `start` (minutes) and checked out `work_s` later."""
    a: dict[str, Any] = dict(appointment_id=appointment, ticket_id=tid, technician_id=tech)
    arrived = start + (travel_s or 0) / 60
    return [
        AppointmentBooked(
            **a, occurred_at=at(1), window_start=at(start), window_end=at(start + 120), booked_by="desk"
        ),
        VisitDeparted(**a, occurred_at=at(start)),
        VisitCheckedIn(**a, occurred_at=at(arrived), travel_s=travel_s),
        VisitCheckedOut(**a, occurred_at=at(arrived + work_s / 60), work_s=work_s),
    ]


def no_show(tid: str, appointment: str, minutes: float, absent: str, tech: str = "tech-1") -> BaseModel:
    return AppointmentNoShow.model_validate(
        dict(
            appointment_id=appointment,
            ticket_id=tid,
            technician_id=tech,
            occurred_at=at(minutes),
            absent=absent,
        )
    )


def part(tid: str, line: str, quantity: int, cost: int | None, report: str = "R1") -> StockConsumed:
    return StockConsumed(
        location_id="van:tech-1",
        part_id="P-filter",
        occurred_at=at(30),
        quantity=quantity,
        report_id=report,
        ticket_id=tid,
        line_id=line,
        unit_cost_cents=cost,
    )


def facts_of(events: Sequence[BaseModel], subject: str = "T1") -> Facts:
    return reduce(fold, events, Facts(subject=subject))


def totals(events_by_ticket: dict[str, list[BaseModel]], dimension: str = "all") -> dict[str, dict[str, int]]:
    """Sum the day rollups of one dimension over every ticket, as the store would."""
    out: dict[str, dict[str, int]] = {}
    for tid, events in events_by_ticket.items():
        for bucket, counters in contribution(facts_of(events, tid), UTC_ZONE).items():
            if not bucket.startswith("d:"):
                continue
            for key, amount in counters.items():
                dim, rest = key.split("|", 1)
                value, name = rest.rsplit("|", 1)
                if dim == dimension:
                    add_counters(out.setdefault(value, {}), {name: amount})
    return out


ONE_VISIT = [
    created("T1"),
    assigned("T1"),
    *visit("T1", "A1", 10, 900, 1800),
    part("T1", "L1", 2, 1500),
    part("T1", "L2", 1, 500),
    resolved("T1", 60),
]
TWO_VISITS = [
    created("T2"),
    assigned("T2", tech="tech-2"),
    *visit("T2", "A2", 10, 600, 1200, tech="tech-2"),
    no_show("T2", "A3", 100, "customer", tech="tech-2"),
    *visit("T2", "A4", 200, 1200, 600, tech="tech-3"),
    resolved("T2", 250, tech="tech-3"),
]


def test_one_visit_is_a_first_time_fix_and_a_second_visit_is_not() -> None:
    by_tech = totals({"T1": ONE_VISIT, "T2": TWO_VISITS}, "technician")
    assert kpis(by_tech["tech-1"])["first_time_fix_rate"] == 1.0
    # the repeat-visit ticket counts for the technician of its first visit, not for its resolver
    assert kpis(by_tech["tech-2"])["first_time_fix_rate"] == 0.0
    assert "field_resolved" not in by_tech.get("tech-3", {})
    k = kpis(totals({"T1": ONE_VISIT, "T2": TWO_VISITS})["all"])
    assert k["first_time_fix_rate"] == 0.5
    assert k["avg_travel_s"] == (900 + 600 + 1200) / 3
    assert k["avg_work_s"] == (1800 + 1200 + 600) / 3
    assert k["appointment_kept_rate"] == round(3 / 4, 4)  # three checked in, one customer no-show


def test_a_visit_after_the_resolution_turns_a_first_time_fix_into_a_repeat() -> None:
    reopened = TicketReopened(
        ticket_id="T1",
        channel=Channel.PHONE,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P2,
        customer_id="C1",
        region_code="310000",
        device_type="boiler",
        reason="still broken",
        reopen_count=1,
        reopened_at=at(300),
    )
    later = [*ONE_VISIT, reopened, *visit("T1", "A9", 400, None, 300), resolved("T1", 500, rnd=2)]
    k = kpis(totals({"T1": later})["all"])
    assert k["first_time_fix_rate"] == 0.0
    assert k["avg_travel_s"] == 900  # the second visit set off without a departure: no travel leg
    assert k["avg_work_s"] == (1800 + 300) / 2


def test_a_ticket_resolved_without_a_visit_is_not_a_field_resolution() -> None:
    remote = [created("T3"), assigned("T3"), no_show("T3", "A5", 20, "technician"), resolved("T3", 30)]
    counters = totals({"T3": remote})["all"]
    assert "field_resolved" not in counters
    k = kpis(counters)
    assert k["first_time_fix_rate"] is None and k["avg_parts_cost_per_field_resolution"] is None
    assert k["appointment_kept_rate"] == 0.0
    assert counters["appointments_no_show_technician"] == 1


def test_parts_cost_per_resolution_counts_only_fully_costed_resolutions() -> None:
    uncosted = [created("T4"), assigned("T4"), *visit("T4", "A6", 10, 60, 60), part("T4", "L1", 3, None)]
    counters = totals({"T1": ONE_VISIT, "T4": [*uncosted, resolved("T4", 90)]})["all"]
    k = kpis(counters)
    assert counters["parts_used"] == 2 + 1 + 3
    assert k["avg_parts_per_field_resolution"] == 3.0
    assert k["avg_parts_cost_per_field_resolution"] == (2 * 1500 + 500) / 100  # T4 has no cost: left out
    # A line redelivered (same report and line id) is counted once.
    again = totals({"T1": [*ONE_VISIT, part("T1", "L1", 2, 1500)]})["all"]
    assert again["parts_cost_cents"] == 3500 and again["parts_used"] == 3


def returned(tid: str, line: str, quantity: int, report: str = "R1") -> StockReceived:
    return StockReceived(
        location_id="van:tech-1",
        part_id="P-filter",
        occurred_at=at(40),
        quantity=quantity,
        reason="returned",
        report_id=report,
        ticket_id=tid,
        line_id=line,
    )


def test_parts_given_back_from_a_line_leave_the_tickets_parts_and_cost() -> None:
    base = ONE_VISIT[:-1]  # L1: 2 x 15.00, L2: 1 x 5.00, then resolved
    back = returned("T1", "L1", 2)
    uncosted = part("T1", "L3", 4, None)  # taken without a price, then all given back: costs nothing
    events = [*base, uncosted, back, returned("T1", "L3", 4), resolved("T1", 60)]
    want = {"parts_used": 1, "parts_cost_cents": 500, "parts_costed_resolved": 1}
    for order in (events, list(reversed(events)), [back, *events, back]):  # any order, redelivered
        counters = totals({"T1": order})["all"]
        assert {k: counters.get(k) for k in want} == want
    assert kpis(totals({"T1": events})["all"])["avg_parts_cost_per_field_resolution"] == 5.0
    # A delivery names no ticket: it is no ticket's part.
    delivery = StockReceived(
        location_id="van:tech-1", part_id="P-filter", occurred_at=at(1), quantity=9, reason="delivery"
    )
    assert facts_of([*ONE_VISIT, delivery]) == facts_of(ONE_VISIT)


def test_events_without_a_kpi_change_nothing_in_the_rollups() -> None:
    a: dict[str, Any] = dict(appointment_id="A1", ticket_id="T1", technician_id="tech-1", occurred_at=at(5))
    quiet = [
        AppointmentCancelled(**a, reason="requested"),
        ServiceReportSigned(
            report_id="R1",
            ticket_id="T1",
            technician_id="tech-1",
            content_sha256="0" * 64,
            signed_at=at(50),
            resolution_code="fixed",
        ),
    ]
    base = [created("T1"), assigned("T1")]
    assert contribution(facts_of([*base, *quiet]), UTC_ZONE) == contribution(facts_of(base), UTC_ZONE)


FIELD_STORY = [*TWO_VISITS, part("T2", "L1", 1, 800, report="R2")]


@settings(max_examples=60, deadline=None)
@given(st.permutations(FIELD_STORY), st.lists(st.sampled_from(FIELD_STORY), max_size=5))
def test_field_events_in_any_order_and_redelivered_give_the_same_rollups(
    order: list[BaseModel], repeats: list[BaseModel]
) -> None:
    expected = facts_of(FIELD_STORY, "T2")
    shuffled = facts_of([*order, *repeats], "T2")
    assert shuffled.model_dump() == expected.model_dump()
    assert contribution(shuffled, UTC_ZONE) == contribution(expected, UTC_ZONE)
    f, running = Facts(subject="T2"), Contribution()
    for event in order:  # the per-event deltas add up to the final contribution
        new = fold(f, event)
        for bucket, counters in delta(contribution(f, UTC_ZONE), contribution(new, UTC_ZONE)).items():
            add_counters(running.setdefault(bucket, {}), counters)
        f = new
    assert {b: {k: v for k, v in c.items() if v} for b, c in running.items() if any(c.values())} == (
        contribution(f, UTC_ZONE)
    )


def exported(alltime: Contribution) -> dict[str, Metric]:
    series: dict[str, dict[tuple[str, ...], int]] = {}
    for key, n in alltime.get(ALLTIME, {}).items():
        name, *labels = key.split("|")
        series.setdefault(name, {})[tuple(labels)] = n
    collector = KpiCollector()
    collector.snapshot = Snapshot(alltime=series)
    return {m.name: m for m in collector.collect()}


def test_prometheus_series_carry_the_grid_and_never_a_technician() -> None:
    one = contribution(facts_of(ONE_VISIT), UTC_ZONE)
    two = contribution(facts_of(TWO_VISITS, "T2"), UTC_ZONE)
    merged: Contribution = {ALLTIME: {}}
    for c in (one, two):
        add_counters(merged[ALLTIME], c.get(ALLTIME, {}))
    families = exported(merged)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for name in (
            "aftersales_kpi_field_resolutions",
            "aftersales_kpi_field_appointments",
            "aftersales_kpi_field_parts_cost",
            "aftersales_kpi_field_work_seconds",
        )
        for s in families[name].samples
    }
    assert samples[("aftersales_kpi_field_resolutions_total", (("fix", "first_time"), ("grid", "G1")))] == 1
    assert samples[("aftersales_kpi_field_resolutions_total", (("fix", "repeat"), ("grid", "G1")))] == 1
    assert samples[("aftersales_kpi_field_appointments_total", (("grid", "G1"), ("outcome", "kept")))] == 3
    no_show_key = (
        "aftersales_kpi_field_appointments_total",
        (("grid", "G1"), ("outcome", "no_show_customer")),
    )
    assert samples[no_show_key] == 1
    assert samples[("aftersales_kpi_field_parts_cost_total", (("grid", "G1"),))] == 35.0
    assert samples[("aftersales_kpi_field_work_seconds_sum", (("grid", "G1"),))] == 1800 + 1200 + 600
    labels = {k for f in families.values() for s in f.samples for k in s.labels}
    assert "technician" not in labels and "technician_id" not in labels


# ------------------------------------------------------------ in-process: events in, KPIs out over HTTP


@pytest.fixture
async def metrics() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, publish_reports=False)) as svc:
        yield svc


async def test_fieldwork_events_reach_the_kpi_api_by_grid_and_technician(metrics: ServiceUnderTest) -> None:
    sources = {Topic.TICKETS: "/aftersales/intake", Topic.ASSIGNMENTS: "/aftersales/routing"}
    for data in [*ONE_VISIT, *TWO_VISITS]:
        source = sources.get(event_type_of(data).topic, "/aftersales/fieldwork")
        event = contract_event(data, source=source)
        await metrics.deliver(event)
        if isinstance(data, VisitCheckedOut):
            await metrics.deliver(event)  # a redelivery counts once
    headers = metrics.auth("dev-supervisor-token")
    r = await metrics.http.get("/v1/kpis", params={"group_by": "grid", **DAY}, headers=headers)
    assert r.status_code == 200, r.text
    [grid] = r.json()["rows"]
    assert (grid["value"], grid["counts"]["field_visits"], grid["counts"]["field_resolved"]) == ("G1", 3, 2)
    assert grid["kpis"]["first_time_fix_rate"] == 0.5
    assert grid["kpis"]["avg_parts_cost_per_field_resolution"] == 17.5  # 35.00 over two resolutions
    r = await metrics.http.get("/v1/kpis", params={"group_by": "technician", **DAY}, headers=headers)
    rows = {row["value"]: row for row in r.json()["rows"]}
    assert rows["tech-1"]["kpis"]["first_time_fix_rate"] == 1.0
    assert rows["tech-2"]["kpis"]["appointment_kept_rate"] == 0.5
    assert rows["tech-3"]["kpis"]["avg_travel_s"] == 1200
    assert metrics.dead_letters == []


# ------------------------------------------------------------ parts consumed and low-stock alerts per grid


def low_stock(location: str, minutes: float = 45) -> StockLow:
    return StockLow(location_id=location, part_id="P-filter", occurred_at=at(minutes), threshold=2)


def alert_contribution(location: str, event_id: str = "E1") -> Contribution:
    data = low_stock(location)
    return contribution(facts_of([data, data], subject_of(data, event_id)), UTC_ZONE)


def test_parts_consumed_count_by_the_grid_of_their_stock_with_their_cost() -> None:
    from_warehouse = part("T1", "L3", 4, None).model_copy(update={"location_id": "warehouse:G7"})
    events = [*ONE_VISIT, from_warehouse, returned("T1", "L1", 1)]
    by_grid = totals({"T1": events}, "grid")
    # the van's parts take the ticket's grid (G1): 2 - 1 given back + 1; the warehouse's its own grid
    assert stock_figures(by_grid["G1"]) == {
        "parts_consumed": 2,
        "parts_consumed_cost": (1 * 1500 + 500) / 100,
        "stock_low_alerts": 0,
    }
    assert stock_figures(by_grid["G7"]) == {
        "parts_consumed": 4,
        "parts_consumed_cost": None,
        "stock_low_alerts": 0,
    }
    # every grouping of the ticket sees them; the van's technician for the van's parts
    assert totals({"T1": events}, "category")["hardware_fault"]["parts_consumed"] == 6
    assert totals({"T1": events}, "technician")["tech-1"]["parts_consumed_costed"] == 2
    # a van's parts on a ticket whose grid is not known yet: unknown, corrected once routing's event comes
    early = totals({"T9": [part("T9", "L1", 1, 100)]}, "grid")
    assert early == {
        "unknown": {"parts_consumed": 1, "parts_consumed_costed": 1, "parts_consumed_cost_cents": 100}
    }
    assert set(totals({"T9": [part("T9", "L1", 1, 100), assigned("T9", grid="G2")]}, "grid")) == {"G2"}


def test_a_low_stock_alert_counts_once_for_its_grid_and_a_vans_for_unknown() -> None:
    data = low_stock("warehouse:G7")
    assert subject_of(data, "E1") == "stock-low:E1" and subject_of(data) == ""
    warehouse = alert_contribution("warehouse:G7")
    assert warehouse["d:2026-11-24"] == {"all|all|stock_low_alerts": 1, "grid|G7|stock_low_alerts": 1}
    assert warehouse[ALLTIME] == {"stock_low|G7": 1}
    van = alert_contribution("van:tech-1")
    assert van["d:2026-11-24"] == {
        "all|all|stock_low_alerts": 1,
        "grid|unknown|stock_low_alerts": 1,
        "technician|tech-1|stock_low_alerts": 1,
    }
    assert not facts_of([data], "stock-low:E1").is_ticket
    assert stock_figures({})["parts_consumed_cost"] is None


def test_prometheus_counts_parts_consumed_and_low_stock_by_grid() -> None:
    merged: Contribution = {ALLTIME: {}}
    for c in (contribution(facts_of(ONE_VISIT), UTC_ZONE), alert_contribution("warehouse:G7")):
        add_counters(merged[ALLTIME], c.get(ALLTIME, {}))
    families = exported(merged)
    consumed = {tuple(s.labels.items()): s.value for s in families["aftersales_kpi_parts_consumed"].samples}
    low = {tuple(s.labels.items()): s.value for s in families["aftersales_kpi_stock_low"].samples}
    assert consumed[(("grid", "G1"),)] == 3
    assert low == {(("grid", "G7"),): 1}


async def test_low_stock_alerts_and_parts_reach_the_kpi_api_by_grid(metrics: ServiceUnderTest) -> None:
    sources = {Topic.TICKETS: "/aftersales/intake", Topic.ASSIGNMENTS: "/aftersales/routing"}
    alert = contract_event(low_stock("warehouse:G7"), source="/aftersales/fieldwork")
    for data in ONE_VISIT:
        await metrics.deliver(
            contract_event(data, source=sources.get(event_type_of(data).topic, "/aftersales/fieldwork"))
        )
    await metrics.deliver(alert)
    await metrics.deliver(alert)  # a redelivery counts once
    await metrics.deliver(contract_event(low_stock("van:tech-1"), source="/aftersales/fieldwork"))
    headers = metrics.auth("dev-supervisor-token")
    r = await metrics.http.get("/v1/kpis", params={"group_by": "grid", **DAY}, headers=headers)
    assert r.status_code == 200, r.text
    rows = {row["value"]: row for row in r.json()["rows"]}
    figures = {
        g: (row["parts_consumed"], row["parts_consumed_cost"], row["stock_low_alerts"])
        for g, row in rows.items()
    }
    assert figures == {"G1": (3, 35.0, 0), "G7": (0, None, 1), "unknown": (0, None, 1)}
    r = await metrics.http.get("/v1/kpis", params={"group_by": "all", **DAY}, headers=headers)
    [everything] = r.json()["rows"]
    assert (everything["parts_consumed"], everything["stock_low_alerts"]) == (3, 2)
    assert metrics.dead_letters == []
