"""Use cases over the store: KPI tables, technician performance, inspection reports and their publication."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aftersales.metrics import inspection
from aftersales.metrics.domain import (
    GroupFigures,
    Period,
    ReportPeriod,
    add_counters,
    group_rows,
    parse_period,
)
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts.events import InspectionPublished
from aftersales.shared.envelope import new_event
from aftersales.shared.timers import DurableTimers, Timer

SOURCE = "/aftersales/metrics"
TIMER_KIND = "inspection"


@dataclass
class Reporting:
    store: MetricsStore
    zone: ZoneInfo
    targets: inspection.Targets
    timers: DurableTimers | None = None
    wake_relay: Any = None

    async def kpi_table(
        self, dimension: str, start: date, end: date, period: Period | None
    ) -> list[GroupFigures]:
        """Return KPI rows of `dimension` per value (and per period when asked) over [start, end]."""
        days = await self.store.day_rollups(dimension, start, end)
        current = await self.store.current(dimension)
        return group_rows(days, period, current)

    async def totals(self, dimension: str, start: date, end: date) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for _, by_value in await self.store.day_rollups(dimension, start, end):
            for value, counters in by_value.items():
                add_counters(out.setdefault(value, {}), counters)
        return out

    async def inspection_report(self, label: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Return the inspection report of a week or month, with every finding's figures."""
        period = parse_period(label)
        now = now or datetime.now(UTC)
        prev = period.previous()
        overall = (await self.totals("all", period.start, period.end)).get("all", {})
        findings: list[dict[str, Any]] = []
        findings += inspection.grids_under_target(
            await self.totals("grid", period.start, period.end), self.targets
        )
        for dim in ("category", "product"):
            findings += inspection.rising(
                dim,
                await self.totals(dim, period.start, period.end),
                await self.totals(dim, prev.start, prev.end),
                self.targets,
            )
        findings += inspection.over_capacity(await self.store.current("technician"), self.targets)
        findings += inspection.overdue_findings(await self.store.overdue(now))
        return {
            "report_id": report_id(period),
            "period": period.label,
            "kind": period.kind.value,
            "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(),
            "previous_period": prev.label,
            "generated_at": now.isoformat(),
            "summary": inspection.summary(overall),
            "findings": findings,
        }

    async def publish(self, label: str) -> tuple[dict[str, Any], bool]:
        """Publish the report of a period to aftersales.reports.v1 once; return it and whether it is new."""
        period = parse_period(label)
        existing = await self.store.report(report_id(period))
        if existing is not None:
            return existing, False
        report = await self.inspection_report(label)
        now = datetime.now(UTC)
        event = new_event(
            InspectionPublished(
                report_id=report["report_id"],
                period=period.label,
                period_start=period.start,
                period_end=period.end,
                findings=len(report["findings"]),
                occurred_at=now,
                kind=period.kind.value,
                finding_kinds=sorted({f["kind"] for f in report["findings"]}),
                url=f"/v1/reports/inspections?period={period.label}",
            ),
            source=SOURCE,
            subject=report["report_id"],
        )
        stored = {"_id": report["report_id"], **report, "published_at": now}
        created = await self.store.publish_report(stored, event)
        if self.wake_relay is not None:
            self.wake_relay()
        if not created:
            again = await self.store.report(report["report_id"])
            return again or stored, False
        return stored, True

    # ------------------------------------------------------------ the weekly / monthly schedule

    async def schedule_next(self, now: datetime | None = None) -> None:
        """Make sure the next weekly and monthly publications are scheduled as durable timers."""
        if self.timers is None:
            return
        now = now or datetime.now(UTC)
        for kind in (Period.WEEK, Period.MONTH):
            due_day, label = next_publication(now.astimezone(self.zone).date(), kind)
            due_at = datetime.combine(due_day, time(1, 0), self.zone)
            await self.timers.schedule(f"inspection:{label}", TIMER_KIND, due_at, {"period": label})

    async def on_timer(self, timer: Timer) -> None:
        if timer.kind != TIMER_KIND:
            return
        await self.publish(str(timer.payload["period"]))
        await self.schedule_next()


def report_id(period: ReportPeriod) -> str:
    return f"inspection-{period.label}"


def next_publication(today: date, kind: Period) -> tuple[date, str]:
    """Return the day the next report of `kind` is due and the period it covers (the one just ended)."""
    if kind is Period.WEEK:
        monday = today + timedelta(days=7 - today.weekday())
        year, week, _ = (monday - timedelta(days=1)).isocalendar()
        return monday, f"{year}-W{week:02d}"
    first = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    last = first - timedelta(days=1)
    return first, f"{last.year}-{last.month:02d}"
