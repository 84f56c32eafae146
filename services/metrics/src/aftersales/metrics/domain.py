"""KPI arithmetic and calendar periods: from summed rollup counters to the figures supervisors read.

Every KPI is a ratio or an average of counters kept by `rollups`; a KPI whose denominator is zero is
None (not 0), so "no data" never looks like "0 % compliance".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from aftersales.shared.errors import InvalidRequest

RATE_DIGITS = 4
SECONDS_DIGITS = 3


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
