"""KPI arithmetic on hand-made event sequences: reopen, escalation, pause, out-of-order and redelivery; the
fold of a batch into one facts document; a technician's standing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from aftersales.metrics.domain import (
    Period,
    SubjectFacts,
    add_counters,
    csat_distribution,
    fold_subject,
    group_rows,
    kpis,
    parse_period,
    period_key,
    technician_standing,
)
from aftersales.metrics.facts import Facts, paused_seconds, subject_of
from aftersales.metrics.fold import fold
from aftersales.metrics.rollups import CURRENT, Contribution, contribution, delta
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import (
    ComplaintClosed,
    ComplaintOpened,
    ComplaintState,
    SlaBreached,
    SlaClock,
    SurveySubmitted,
    TicketCancelled,
    TicketCreated,
    TicketReopened,
    VisitCompleted,
    VisitKind,
    VisitMissed,
    VisitOutcome,
    VisitScheduled,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderEscalated,
    WorkOrderPending,
    WorkOrderResolved,
    WorkOrderStarted,
)

UTC_ZONE = ZoneInfo("UTC")
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def created(tid: str, minutes: float = 0, **kw: object) -> TicketCreated:
    fields: dict[str, object] = dict(
        ticket_id=tid,
        channel=Channel.PHONE,
        category=Category.HARDWARE_FAULT,
        priority=Priority.P2,
        customer_id="C1",
        region_code="310000",
        device_type="boiler",
        created_at=at(minutes),
        rules_version="r1",
    )
    fields.update(kw)
    return TicketCreated.model_validate(fields)


def assigned(
    tid: str, minutes: float, tech: str = "tech-1", grid: str = "G1", rnd: int = 1
) -> WorkOrderAssigned:
    return WorkOrderAssigned(
        ticket_id=tid,
        grid_id=grid,
        round=rnd,
        occurred_at=at(minutes),
        technician_id=tech,
        team_id="team-a",
        tier=1,
        via="direct",
        priority=Priority.P2,
        category=Category.HARDWARE_FAULT,
    )


def accepted(tid: str, minutes: float, tech: str = "tech-1", grid: str = "G1") -> WorkOrderAccepted:
    return WorkOrderAccepted(ticket_id=tid, grid_id=grid, occurred_at=at(minutes), technician_id=tech)


def resolved(
    tid: str, minutes: float, tech: str = "tech-1", rnd: int = 1, grid: str = "G1"
) -> WorkOrderResolved:
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


def simple_ticket(tid: str) -> list[BaseModel]:
    return [created(tid), assigned(tid, 5), accepted(tid, 10), resolved(tid, 60)]


def test_first_response_resolution_and_first_contact_resolution() -> None:
    k = kpis(totals({"T1": simple_ticket("T1")})["all"])
    assert k["avg_assignment_latency_s"] == 300
    assert k["avg_first_response_s"] == 600
    assert k["avg_resolution_s"] == 3600
    assert k["avg_resolution_net_s"] == 3600
    assert k["resolution_rate"] == 1.0
    assert k["first_contact_resolution_rate"] == 1.0
    assert k["reopen_rate"] == 0.0
    assert k["sla_response_compliance"] == 1.0


def test_pause_is_excluded_from_net_resolution_and_response_times() -> None:
    events = [
        created("T1"),
        WorkOrderPending(ticket_id="T1", grid_id="G1", occurred_at=at(2), technician_id="tech-1"),
        WorkOrderStarted(ticket_id="T1", grid_id="G1", occurred_at=at(7), technician_id="tech-1"),
        accepted("T1", 10),
        WorkOrderPending(ticket_id="T1", grid_id="G1", occurred_at=at(20), technician_id="tech-1"),
        WorkOrderStarted(ticket_id="T1", grid_id="G1", occurred_at=at(40), technician_id="tech-1"),
        resolved("T1", 60),
    ]
    f = facts_of(events)
    assert paused_seconds(f, at(60)) == 25 * 60
    k = kpis(totals({"T1": events})["all"])
    assert k["avg_first_response_s"] == (10 - 5) * 60
    assert k["avg_resolution_s"] == 3600
    assert k["avg_resolution_net_s"] == (60 - 25) * 60


def test_an_open_pause_runs_until_the_resolution() -> None:
    events = [
        created("T1"),
        WorkOrderPending(ticket_id="T1", grid_id="G1", occurred_at=at(50), technician_id="x"),
    ]
    assert paused_seconds(facts_of(events), at(60)) == 600


def test_reopen_breaks_first_contact_resolution_and_counts_in_reopen_rate() -> None:
    t1 = [*simple_ticket("T1"), reopened("T1", 90), assigned("T1", 95, rnd=2), resolved("T1", 120, rnd=2)]
    t2 = simple_ticket("T2")
    k = kpis(totals({"T1": t1, "T2": t2})["all"])
    assert k["first_contact_resolution_rate"] == 0.5
    assert k["reopen_rate"] == 0.5
    assert k["avg_resolution_s"] == 3600  # first resolution of both


def reopened(tid: str, minutes: float, count: int = 1) -> TicketReopened:
    base = created(tid).model_dump()
    base.pop("created_at"), base.pop("rules_version")
    return TicketReopened.model_validate(
        {**base, "reason": "not fixed", "reopen_count": count, "reopened_at": at(minutes)}
    )


def test_a_reopened_ticket_is_back_in_the_backlog_until_resolved_again() -> None:
    f = facts_of([*simple_ticket("T1"), reopened("T1", 90)])
    assert f.is_open
    assert contribution(f, UTC_ZONE)[CURRENT]["grid|G1|open"] == 1
    f = fold(f, resolved("T1", 120, rnd=2))
    assert not f.is_open
    assert CURRENT not in contribution(f, UTC_ZONE)


def test_escalation_breaks_first_contact_resolution() -> None:
    t1 = [
        created("T1"),
        accepted("T1", 10),
        WorkOrderEscalated(
            ticket_id="T1",
            grid_id="G1",
            occurred_at=at(30),
            level="tier2",
            reason="technician",
            from_technician_id="tech-1",
            to_technician_id="tech-9",
        ),
        resolved("T1", 80, tech="tech-9"),
    ]
    totals_ = totals({"T1": t1, "T2": simple_ticket("T2"), "T3": simple_ticket("T3")})
    k = kpis(totals_["all"])
    assert k["first_contact_resolution_rate"] == round(2 / 3, 4)
    assert k["escalation_rate"] == round(1 / 3, 4)
    by_tech = totals({"T1": t1}, "technician")
    assert set(by_tech) == {"tech-9"}  # the technician who holds it last gets the ticket


def test_sla_compliance_counts_breaches_against_concluded_clocks() -> None:
    breach = SlaBreached(
        ticket_id="T2", grid_id="G1", occurred_at=at(30), clock=SlaClock.FIRST_RESPONSE, due_at=at(30)
    )
    late_res = SlaBreached(
        ticket_id="T3", grid_id="G1", occurred_at=at(50), clock=SlaClock.RESOLUTION, due_at=at(50)
    )
    t3 = [created("T3"), late_res]  # breached and still unresolved: concluded as a miss
    k = kpis(totals({"T1": simple_ticket("T1"), "T2": [*simple_ticket("T2"), breach], "T3": t3})["all"])
    assert k["sla_response_compliance"] == 0.5  # T1 met, T2 breached; T3 never responded nor breached
    assert k["sla_resolution_compliance"] == round(2 / 3, 4)
    assert k["resolution_rate"] == round(2 / 3, 4)


def test_csat_average_distribution_and_nps() -> None:
    surveys = [(5, 10), (4, 9), (2, 3), (3, None)]
    events: dict[str, list[BaseModel]] = {}
    for i, (csat, nps) in enumerate(surveys):
        tid = f"T{i}"
        events[tid] = [
            *simple_ticket(tid),
            SurveySubmitted(
                survey_id=f"S{i}", ticket_id=tid, round=1, csat=csat, nps=nps, occurred_at=at(200)
            ),
        ]
    c = totals(events)["all"]
    k = kpis(c)
    assert k["csat_average"] == 3.5
    assert csat_distribution(c) == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 1}
    assert k["nps"] == round((2 - 1) * 100 / 3, 2)


def complaint(tid: str, cid: str, closed_in_time: bool | None) -> list[BaseModel]:
    """Return a complaint opened at minute 70 (deadline 48 h later), closed at minute 100 unless None."""
    out: list[BaseModel] = [
        ComplaintOpened(
            complaint_id=cid,
            ticket_id=tid,
            state=ComplaintState.RECEIVED,
            occurred_at=at(70),
            source="api",
            deadline_at=at(70 + 60 * 48),
        )
    ]
    if closed_in_time is not None:
        out.append(
            ComplaintClosed(
                complaint_id=cid,
                ticket_id=tid,
                state=ComplaintState.CLOSED,
                occurred_at=at(100),
                within_deadline=closed_in_time,
            )
        )
    return out


def test_complaint_rate_closed_in_time_and_follow_up_completion() -> None:
    def visit(tid: str, vid: str, outcome: str) -> list[BaseModel]:
        out: list[BaseModel] = [
            VisitScheduled(
                visit_id=vid,
                ticket_id=tid,
                kind=VisitKind.CALLBACK,
                occurred_at=at(61),
                due_at=at(61 + 60 * 24),
            )
        ]
        if outcome == "done":
            out.append(
                VisitCompleted(
                    visit_id=vid,
                    ticket_id=tid,
                    kind=VisitKind.CALLBACK,
                    occurred_at=at(300),
                    outcome=VisitOutcome.CONFIRMED_RESOLVED,
                )
            )
        elif outcome == "missed":
            out.append(
                VisitMissed(
                    visit_id=vid,
                    ticket_id=tid,
                    kind=VisitKind.CALLBACK,
                    occurred_at=at(2000),
                    due_at=at(61 + 60 * 24),
                )
            )
        return out

    events = {
        "T1": [*simple_ticket("T1"), *complaint("T1", "K1", True), *visit("T1", "V1", "done")],
        "T2": [*simple_ticket("T2"), *complaint("T2", "K2", False), *visit("T2", "V2", "missed")],
        "T3": [*simple_ticket("T3"), *complaint("T3", "K3", None), *visit("T3", "V3", "done")],
        "T4": [*simple_ticket("T4"), *visit("T4", "V4", "open")],
    }
    k = kpis(totals(events)["all"])
    assert k["complaint_rate"] == 0.75
    assert k["complaints_closed_in_time_rate"] == 0.5
    assert k["followup_completion_rate"] == 0.5
    current = contribution(facts_of(events["T3"], "T3"), UTC_ZONE)[CURRENT]
    assert current["all|all|open_complaints"] == 1


def test_a_complaint_without_ticket_has_its_own_subject() -> None:
    opened = ComplaintOpened(
        complaint_id="K9",
        state=ComplaintState.RECEIVED,
        occurred_at=at(1),
        source="channel",
        category=Category.COMPLAINT,
        deadline_at=at(100),
    )
    assert subject_of(opened) == "complaint:K9"
    c = contribution(facts_of([opened], "complaint:K9"), UTC_ZONE)
    assert c[f"d:{T0.date()}"]["category|complaint|complaints"] == 1
    assert "all|all|created" not in c[f"d:{T0.date()}"]


def test_cancelled_ticket_leaves_the_backlog() -> None:
    f = facts_of([created("T1"), TicketCancelled(ticket_id="T1", reason="dup", cancelled_at=at(3))])
    assert not f.is_open
    assert (
        kpis(
            totals({"T1": [created("T1"), TicketCancelled(ticket_id="T1", reason="d", cancelled_at=at(3))]})[
                "all"
            ]
        )["resolution_rate"]
        == 0.0
    )


FULL_STORY: list[BaseModel] = [
    created("T1"),
    assigned("T1", 5),
    accepted("T1", 10),
    WorkOrderPending(ticket_id="T1", grid_id="G1", occurred_at=at(20), technician_id="tech-1"),
    WorkOrderStarted(ticket_id="T1", grid_id="G1", occurred_at=at(40), technician_id="tech-1"),
    SlaBreached(ticket_id="T1", grid_id="G1", occurred_at=at(45), clock=SlaClock.RESOLUTION, due_at=at(45)),
    resolved("T1", 60),
    SurveySubmitted(survey_id="S1", ticket_id="T1", round=1, csat=2, nps=4, occurred_at=at(70)),
    reopened("T1", 80),
    assigned("T1", 85, tech="tech-2", grid="G2", rnd=2),
    WorkOrderEscalated(
        ticket_id="T1", grid_id="G2", round=2, occurred_at=at(90), level="supervisor", reason="customer"
    ),
    resolved("T1", 1500, tech="tech-2", rnd=2, grid="G2"),
    SurveySubmitted(survey_id="S2", ticket_id="T1", round=2, csat=5, nps=10, occurred_at=at(1600)),
    VisitScheduled(
        visit_id="V1", ticket_id="T1", kind=VisitKind.CALLBACK, occurred_at=at(61), due_at=at(600)
    ),
    VisitCompleted(
        visit_id="V1",
        ticket_id="T1",
        kind=VisitKind.CALLBACK,
        occurred_at=at(500),
        outcome=VisitOutcome.NOT_RESOLVED,
    ),
]


@settings(max_examples=60, deadline=None)
@given(st.permutations(FULL_STORY), st.lists(st.sampled_from(FULL_STORY), max_size=5))
def test_out_of_order_and_redelivered_events_give_the_same_facts_and_rollups(
    order: list[BaseModel], repeats: list[BaseModel]
) -> None:
    expected = facts_of(FULL_STORY)
    shuffled = facts_of([*order, *repeats])
    assert shuffled.model_dump() == expected.model_dump()
    assert contribution(shuffled, UTC_ZONE) == contribution(expected, UTC_ZONE)


@settings(max_examples=40, deadline=None)
@given(st.permutations(FULL_STORY))
def test_the_sum_of_per_event_deltas_is_the_final_contribution(order: list[BaseModel]) -> None:
    f = Facts(subject="T1")
    running: Contribution = {}
    for event in order:
        new = fold(f, event)
        for bucket, counters in delta(contribution(f, UTC_ZONE), contribution(new, UTC_ZONE)).items():
            add_counters(running.setdefault(bucket, {}), counters)
        f = new
    cleaned = {b: {k: v for k, v in c.items() if v} for b, c in running.items()}
    assert {b: c for b, c in cleaned.items() if c} == contribution(f, UTC_ZONE)


def test_full_story_figures() -> None:
    f = facts_of(FULL_STORY)
    assert (f.grid, f.technician, f.reopen_count, f.escalated) == ("G2", "tech-2", 1, True)
    k = kpis(totals({"T1": FULL_STORY})["all"])
    assert k["avg_resolution_s"] == 3600
    assert k["avg_resolution_net_s"] == 3600 - 20 * 60
    assert k["first_contact_resolution_rate"] == 0.0
    assert k["sla_resolution_compliance"] == 0.0
    assert k["csat_average"] == 3.5
    assert k["nps"] == 0.0
    assert k["followup_completion_rate"] == 1.0


def test_days_weeks_and_months_group_day_rollups() -> None:
    days = [
        (date(2026, 11, 29), {"G1": {"created": 2}}),  # Sunday of W48
        (date(2026, 11, 30), {"G1": {"created": 3}, "G2": {"created": 1}}),  # Monday of W49
        (date(2026, 12, 1), {"G1": {"created": 4}}),
    ]
    weeks = {(r.value, r.period): r.counters["created"] for r in group_rows(days, Period.WEEK, {})}
    assert weeks == {("G1", "2026-W48"): 2, ("G1", "2026-W49"): 7, ("G2", "2026-W49"): 1}
    months = {(r.value, r.period): r.counters["created"] for r in group_rows(days, Period.MONTH, {})}
    assert months == {("G1", "2026-11"): 5, ("G1", "2026-12"): 4, ("G2", "2026-11"): 1}
    total = group_rows(days, None, {"G3": {"open": 2}, "G4": {"open": 0}})
    assert {r.value: r.current.get("open", 0) for r in total} == {"G1": 0, "G2": 0, "G3": 2}
    moved = [(date(2026, 11, 29), {"unknown": {"surveys": 0}, "G1": {"surveys": 1}})]
    assert [r.value for r in group_rows(moved, Period.DAY, {})] == ["G1"]  # corrected away: no row


def test_periods_parse_and_label() -> None:
    w = parse_period("2026-W48")
    assert (w.start, w.end) == (date(2026, 11, 23), date(2026, 11, 29))
    assert w.previous().label == "2026-W47"
    m = parse_period("2026-02")
    assert (m.start, m.end) == (date(2026, 2, 1), date(2026, 2, 28))
    assert parse_period("2026-01").previous().label == "2025-12"
    assert period_key(date(2026, 1, 1), Period.WEEK) == "2026-W01"
    for bad in ("2026-W54", "2026-13", "last week"):
        with pytest.raises(Exception, match=r"period|week|month"):
            parse_period(bad)


def test_days_are_cut_in_the_kpi_time_zone() -> None:
    late = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)  # 01:30 next day in Shanghai
    f = facts_of([created("T1", (late - T0).total_seconds() / 60)])
    assert "d:2026-11-25" in contribution(f, ZoneInfo("Asia/Shanghai"))
    assert "d:2026-11-24" in contribution(f, UTC_ZONE)


def test_ratios_without_denominator_are_none_not_zero() -> None:
    k = kpis({})
    assert all(v is None for v in k.values())


def folded(stored: SubjectFacts, events: list[BaseModel], first_id: int = 0) -> SubjectFacts:
    """Return the facts document after folding the events (ids e<first_id>, e<first_id + 1>, ...)."""
    ids = [(f"e{first_id + i}", e) for i, e in enumerate(events)]
    after = fold_subject(stored, ids, UTC_ZONE).state
    return SubjectFacts("T1", after.facts, after.applied_events, version=(stored.version or 0) + 1)


def test_a_batch_takes_the_new_events_with_their_whole_rollup_delta() -> None:
    decision = fold_subject(SubjectFacts("T1", Facts(subject="T1")), [("e0", created("T1"))], UTC_ZONE)
    assert decision.changed
    assert decision.state.applied_events == ("e0",)
    assert decision.state.rollup_delta == contribution(decision.state.facts, UTC_ZONE)


def test_a_batch_of_redeliveries_decides_nothing() -> None:
    stored = folded(SubjectFacts("T1", Facts(subject="T1")), [created("T1")])
    decision = fold_subject(stored, [("e0", created("T1"))], UTC_ZONE)
    assert not decision.changed
    assert decision.state.rollup_delta == {}
    assert decision.state.deadlines.opened == {} and decision.state.deadlines.closed == ()


def test_an_opened_complaint_opens_its_deadline_and_closing_it_closes_it() -> None:
    stored = folded(SubjectFacts("T1", Facts(subject="T1")), [created("T1")])
    opening = fold_subject(stored, [("e1", complaint("T1", "K1", None)[0])], UTC_ZONE).state
    assert list(opening.deadlines.opened) == ["complaint:K1"]
    assert opening.deadlines.opened["complaint:K1"]["due_at"] == at(70 + 60 * 48)
    after_open = folded(stored, complaint("T1", "K1", None), first_id=1)
    closing = fold_subject(after_open, [("e2", complaint("T1", "K1", True)[1])], UTC_ZONE).state
    assert closing.deadlines.closed == ("complaint:K1",)
    assert closing.deadlines.opened == {}


def test_technicians_rank_by_tickets_resolved_without_the_unassigned() -> None:
    by_technician = {"t1": {"resolved": 2}, "t2": {"resolved": 5}, "unassigned": {"resolved": 9}}
    standing = technician_standing("t1", by_technician, {"resolved": 16}, {"t1": {"open": 3}})
    assert (standing.rank_by_resolved, standing.technicians_ranked, standing.open_tickets) == (2, 2, 3)
    assert standing.counters == {"resolved": 2} and standing.benchmark == {"resolved": 16}
    assert technician_standing("t9", by_technician, {}, {}).rank_by_resolved is None
