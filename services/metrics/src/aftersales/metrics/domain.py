"""The metrics rules: what a batch of events changes in one subject's facts document (its facts, its
rollup delta, its open deadlines), and the KPI arithmetic and calendar periods that turn summed rollup
counters into the figures supervisors read.

Every KPI is a ratio or an average of counters kept by `rollups`; a KPI whose denominator is zero is
None (not 0), so "no data" never looks like "0 % compliance".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from aftersales.metrics.facts import Facts
from aftersales.metrics.fold import fold
from aftersales.metrics.rollups import Contribution, contribution, delta
from aftersales.shared.aggregate import Decision
from aftersales.shared.errors import InvalidRequest

RATE_DIGITS = 4
SECONDS_DIGITS = 3


# ------------------------------------------------------------ recording: one subject's facts document


@dataclass(frozen=True, slots=True)
class DeadlineChanges:
    """What a fold changed in the open deadlines: the keys it closed, and the deadlines it opened or moved."""

    closed: tuple[str, ...] = ()
    opened: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """The facts document of a subject (a ticket, or a complaint without one): the aggregate events fold into.

    `rollup_delta` and `deadlines` are what the last fold changed: the rollup delta, held pending in the
    document until its batch has moved the rollups, and the open deadlines written ahead of the facts."""

    subject: str
    facts: Facts
    applied_events: tuple[str, ...] = ()
    version: int | None = None  # None: no document yet
    pending_batches: tuple[str, ...] = ()  # batches whose rollup delta the document holds (see `store`)
    rollup_delta: Contribution = field(default_factory=dict)
    deadlines: DeadlineChanges = field(default_factory=DeadlineChanges)


def fold_subject(
    stored: SubjectFacts, events: Sequence[tuple[str, BaseModel]], zone: ZoneInfo
) -> Decision[SubjectFacts]:
    """Return the facts after the (event id, event) pairs not applied before, with the rollup delta and the
    deadline changes they cause. The decision's events are the newly folded ones (the fold publishes
    nothing); without any, every event was a redelivery and nothing is to be written."""
    applied = set(stored.applied_events)
    fresh = [(i, d) for i, d in events if i not in applied]
    if not fresh:
        return Decision(stored)
    old = stored.facts
    new = old
    for _, data in fresh:
        new = fold(new, data)
    after = replace(
        stored,
        facts=new,
        applied_events=(*stored.applied_events, *(i for i, _ in fresh)),
        rollup_delta=delta(contribution(old, zone), contribution(new, zone)),
        deadlines=deadline_changes(old, new),
    )
    return Decision(after, tuple(data for _, data in fresh))


def deadline_changes(old: Facts, new: Facts) -> DeadlineChanges:
    """Return the open deadlines that changed between two versions of one subject's facts."""
    before, after = open_deadlines(old), open_deadlines(new)
    return DeadlineChanges(
        closed=tuple(before.keys() - after.keys()),
        opened={key: doc for key, doc in after.items() if before.get(key) != doc},
    )


def open_deadlines(f: Facts) -> dict[str, dict[str, Any]]:
    """Return the open complaint deadlines and follow-up due times of one subject, keyed for storage."""
    out: dict[str, dict[str, Any]] = {}
    ticket_id = f.subject if f.is_ticket else None
    for c in f.complaints:
        if c.closed_at is None and c.deadline_at is not None:
            out[f"complaint:{c.complaint_id}"] = {
                "kind": "complaint",
                "item_id": c.complaint_id,
                "due_at": c.deadline_at,
                "ticket_id": ticket_id,
                "grid": f.grid,
            }
    for v in f.visits:
        if not v.done and v.due_at is not None:
            out[f"visit:{v.visit_id}"] = {
                "kind": "visit",
                "item_id": v.visit_id,
                "visit_kind": v.kind,
                "due_at": v.due_at,
                "ticket_id": ticket_id,
                "grid": f.grid,
            }
    return out


# ------------------------------------------------------------ reading: periods and KPIs


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def period_key(day: date, period: Period | None) -> str:
    """Return the label of the period a day falls in: 2026-11-24, 2026-W48 or 2026-11 (None: "total")."""
    if period is None:
        return "total"
    if period is Period.DAY:
        return day.isoformat()
    if period is Period.WEEK:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    label: str
    kind: Period
    start: date
    end: date  # inclusive

    def previous(self) -> ReportPeriod:
        return parse_period(period_key(self.start - timedelta(days=1), self.kind))


def parse_period(label: str) -> ReportPeriod:
    """Return the days of an ISO week (2026-W48) or a month (2026-11); refuse anything else."""
    if m := _WEEK.match(label):
        year, week = int(m[1]), int(m[2])
        try:
            start = date.fromisocalendar(year, week, 1)
        except ValueError:
            raise InvalidRequest(f"{label} is not an ISO week of {year}", field="period") from None
        return ReportPeriod(label, Period.WEEK, start, start + timedelta(days=6))
    if m := _MONTH.match(label):
        year, month = int(m[1]), int(m[2])
        if not 1 <= month <= 12:
            raise InvalidRequest(f"{label}: month must be 01-12", field="period")
        start = date(year, month, 1)
        nxt = date(year + (month == 12), month % 12 + 1, 1)
        return ReportPeriod(label, Period.MONTH, start, nxt - timedelta(days=1))
    raise InvalidRequest("period must be an ISO week like 2026-W48 or a month like 2026-11", field="period")


def add_counters(target: dict[str, int], more: Mapping[str, int]) -> None:
    for name, amount in more.items():
        target[name] = target.get(name, 0) + int(amount)


def sum_days(days: Iterable[tuple[date, Mapping[str, Mapping[str, int]]]]) -> dict[str, dict[str, int]]:
    """Return value -> counters summed over day rollups (value -> counters, per day)."""
    out: dict[str, dict[str, int]] = {}
    for _, by_value in days:
        for value, counters in by_value.items():
            add_counters(out.setdefault(value, {}), counters)
    return out


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, RATE_DIGITS) if den else None


def _avg_s(total_ms: int, count: int) -> float | None:
    return round(total_ms / count / 1000, SECONDS_DIGITS) if count else None


def kpis(c: Mapping[str, int]) -> dict[str, float | None]:
    """Return every KPI derived from one group's summed counters."""

    def g(name: str) -> int:
        return int(c.get(name, 0))

    surveys, nps_n = g("surveys"), g("nps_responses")
    resp_concluded, res_concluded = g("response_concluded"), g("resolution_concluded")
    return {
        "avg_assignment_latency_s": _avg_s(g("assign_ms"), g("assigned")),
        "avg_first_response_s": _avg_s(g("response_ms"), g("responded")),
        "avg_resolution_s": _avg_s(g("resolution_ms"), g("resolved")),
        "avg_resolution_net_s": _avg_s(g("resolution_net_ms"), g("resolved")),
        "resolution_rate": _ratio(g("resolved_of_created"), g("created")),
        "first_contact_resolution_rate": _ratio(g("first_contact_resolved"), g("resolved")),
        "reopen_rate": _ratio(g("reopened"), g("resolved")),
        "escalation_rate": _ratio(g("escalated"), g("created")),
        "sla_response_compliance": _ratio(resp_concluded - g("response_breached"), resp_concluded),
        "sla_resolution_compliance": _ratio(res_concluded - g("resolution_breached"), res_concluded),
        "csat_average": round(g("csat_sum") / surveys, RATE_DIGITS) if surveys else None,
        "nps": round((g("promoters") - g("detractors")) * 100 / nps_n, 2) if nps_n else None,
        "complaint_rate": _ratio(g("complaints"), g("created")),
        "complaints_closed_in_time_rate": _ratio(g("complaints_closed_in_time"), g("complaints_closed")),
        "followup_completion_rate": _ratio(
            g("followups_completed"), g("followups_scheduled") - g("followups_cancelled")
        ),
        **field_kpis(g),
    }


def field_kpis(g: Callable[[str], int]) -> dict[str, float | None]:
    """Return the on-site (fieldwork) KPIs from one group's counters; see the metrics README."""
    costed = g("parts_costed_resolved")
    return {
        "first_time_fix_rate": _ratio(g("first_time_fixed"), g("field_resolved")),
        "appointment_kept_rate": _ratio(g("appointments_kept"), g("appointments_concluded")),
        "avg_travel_s": _avg_s(g("travel_ms"), g("travel_legs")),
        "avg_work_s": _avg_s(g("work_ms"), g("field_visits")),
        "avg_parts_per_field_resolution": _ratio(g("parts_used"), g("field_resolved")),
        "avg_parts_cost_per_field_resolution": round(g("parts_cost_cents") / costed / 100, 2)
        if costed
        else None,
    }


def stock_figures(c: Mapping[str, int]) -> dict[str, Any]:
    """Return the parts consumed, their cost in currency units (yuan; None when no consumed part had a
    unit cost) and the low-stock alerts of one group's counters."""
    costed = int(c.get("parts_consumed_costed", 0))
    cost = round(int(c.get("parts_consumed_cost_cents", 0)) / 100, 2) if costed else None
    return {
        "parts_consumed": int(c.get("parts_consumed", 0)),
        "parts_consumed_cost": cost,
        "stock_low_alerts": int(c.get("stock_low_alerts", 0)),
    }


def csat_distribution(c: Mapping[str, int]) -> dict[str, int]:
    return {str(score): int(c.get(f"csat_{score}", 0)) for score in range(1, 6)}


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One row of the KPI table: a dimension value in a period, with its counters and KPIs."""

    value: str
    period: str
    counters: dict[str, int]
    current: dict[str, int]

    def kpis(self) -> dict[str, float | None]:
        return kpis(self.counters)


def group_rows(
    days: Iterable[tuple[date, Mapping[str, Mapping[str, int]]]],
    period: Period | None,
    current: Mapping[str, Mapping[str, int]],
) -> list[GroupFigures]:
    """Sum day rollups (value -> counters, per day) into rows per (value, period)."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for day, by_value in days:
        key = period_key(day, period)
        for value, counters in by_value.items():
            add_counters(sums.setdefault((value, key), {}), counters)
    if period is None:
        for value in current:
            sums.setdefault((value, "total"), {})
    rows = []
    for (value, key), counters in sorted(sums.items()):
        now = {k: v for k, v in current.get(value, {}).items() if v} if period is None else {}
        kept = {k: v for k, v in counters.items() if v}
        if kept or now:  # a value whose counters all moved elsewhere (a late correction) is no row
            rows.append(GroupFigures(value, key, kept, now))
    return rows


@dataclass(frozen=True, slots=True)
class TechnicianStanding:
    """A technician's counters over a range, next to everybody's (绩效考核)."""

    counters: dict[str, int]
    benchmark: dict[str, int]
    open_tickets: int
    rank_by_resolved: int | None  # 1 = most tickets resolved in the range
    technicians_ranked: int


def technician_standing(
    technician_id: str,
    by_technician: Mapping[str, dict[str, int]],
    overall: dict[str, int],
    open_by_technician: Mapping[str, Mapping[str, int]],
) -> TechnicianStanding:
    """Return one technician's counters, the overall benchmark and the rank by tickets resolved."""
    ranked = sorted(
        (t for t in by_technician if t != "unassigned"),
        key=lambda t: (-by_technician[t].get("resolved", 0), t),
    )
    return TechnicianStanding(
        counters=by_technician.get(technician_id, {}),
        benchmark=overall,
        open_tickets=open_by_technician.get(technician_id, {}).get("open", 0),
        rank_by_resolved=ranked.index(technician_id) + 1 if technician_id in ranked else None,
        technicians_ranked=len(ranked),
    )
