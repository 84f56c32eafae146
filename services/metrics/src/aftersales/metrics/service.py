"""The metrics use cases: recording every stream into the KPI store a batch at a time, and reading it back
as KPI tables, technician performance and inspection reports (with their weekly and monthly publication).

Recording keeps the rollups exactly once (see `store`): a batch is registered, each subject's facts take
their new events with the rollup delta pending, each bucket then moves once, and a crash is finished by
`recover_batches`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from aftersales.metrics import inspection, messages
from aftersales.metrics.domain import (
    GroupFigures,
    Period,
    TechnicianStanding,
    fold_subject,
    group_rows,
    parse_period,
    sum_days,
    technician_standing,
)
from aftersales.metrics.facts import subject_of
from aftersales.metrics.products import bounded_product
from aftersales.metrics.rollups import Contribution
from aftersales.metrics.store import MetricsStore
from aftersales.metrics.timers import INSPECTION
from aftersales.shared.aggregate import decide_until_written
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.timers import DurableTimers, Timer

FOLD_CONCURRENCY = 16
MAX_WRITE_ATTEMPTS = 20


@dataclass
class Recording:
    """Folds events into per-subject facts and the KPI rollups, each rollup bucket moved once per batch."""

    store: MetricsStore
    zone: ZoneInfo
    products: Collection[str] = ()  # the product catalogue (KPI_PRODUCT_MODELS)
    _in_flight: set[str] = field(default_factory=set, init=False, repr=False)

    async def record(self, events: Sequence[CloudEvent]) -> None:
        """Fold a batch of events; events that describe no ticket or complaint are skipped."""
        items = []
        for event in events:
            data = event.model()  # PoisonEvent: the batch goes one by one, this event to the DLQ
            data = bounded_product(data, self.products)  # a channel's model names must not grow the rollups
            subject = subject_of(data, event.id)
            if subject:  # surge switches, deliveries: no ticket facts
                items.append((subject, event.id, data))
        if items:
            await self.record_batch(items)

    async def record_batch(self, items: Sequence[tuple[str, str, BaseModel]]) -> None:
        """Fold a batch of (subject, event id, event) into facts and rollups, each bucket moved once."""
        by_subject: dict[str, list[tuple[str, BaseModel]]] = {}
        for subject, event_id, data in items:
            by_subject.setdefault(subject, []).append((event_id, data))
        batch_id = uuid.uuid4().hex
        self._in_flight.add(batch_id)
        try:
            subjects = sorted(by_subject)
            await self.store.open_batch(batch_id, subjects)
            gate = asyncio.Semaphore(FOLD_CONCURRENCY)

            async def fold_one(subject: str) -> Contribution:
                async with gate:
                    return await self._fold_subject(subject, by_subject[subject], batch_id)

            changes = await asyncio.gather(*(fold_one(s) for s in subjects))
            await self.store.finish_batch(batch_id, [change for change in changes if change])
        finally:
            self._in_flight.discard(batch_id)

    async def _fold_subject(
        self, subject: str, events: Sequence[tuple[str, BaseModel]], batch_id: str
    ) -> Contribution:
        """Store the new facts of one subject and its rollup delta as pending; return the delta."""
        decision = await decide_until_written(
            lambda: self.store.load_facts(subject),
            lambda stored: fold_subject(stored, events, self.zone),
            lambda before, decided: self.store.write_facts(before, decided.state, batch_id),
            attempts=MAX_WRITE_ATTEMPTS,
            what=f"the facts of {subject} in batch {batch_id}",
        )
        return decision.state.rollup_delta

    async def recover_batches(self) -> int:
        """Finish the batches a crash left behind (none of this process's own); return how many."""
        return await self.store.recover_batches(in_flight=self._in_flight)


@dataclass
class Reporting:
    """KPI tables, technician performance and inspection reports over the rollups."""

    store: MetricsStore
    zone: ZoneInfo
    targets: inspection.Targets
    timers: DurableTimers | None = None
    wake_relay: Callable[[], None] | None = None

    def today(self) -> date:
        """Return today's date in the KPI time zone."""
        return datetime.now(UTC).astimezone(self.zone).date()

    async def kpi_table(
        self, dimension: str, start: date, end: date, period: Period | None
    ) -> list[GroupFigures]:
        """Return KPI rows of `dimension` per value (and per period when asked) over [start, end]."""
        days = await self.store.day_rollups(dimension, start, end)
        current = await self.store.current(dimension)
        return group_rows(days, period, current)

    async def totals(self, dimension: str, start: date, end: date) -> dict[str, dict[str, int]]:
        """Return value -> counters of `dimension` summed over [start, end]."""
        return sum_days(await self.store.day_rollups(dimension, start, end))

    async def technician_performance(self, technician_id: str, start: date, end: date) -> TechnicianStanding:
        """Return a technician's counters over [start, end] next to all technicians', with the rank."""
        everyone = await self.totals("technician", start, end)
        overall = (await self.totals("all", start, end)).get("all", {})
        current = await self.store.current("technician")
        return technician_standing(technician_id, everyone, overall, current)

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
            "report_id": inspection.report_id(period),
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
        existing = await self.store.report(inspection.report_id(period))
        if existing is not None:
            return existing, False
        report = await self.inspection_report(label)
        now = datetime.now(UTC)
        event = messages.inspection_published(report, period, now)
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
            due_day, label = inspection.next_publication(now.astimezone(self.zone).date(), kind)
            due_at = datetime.combine(due_day, time(1, 0), self.zone)
            await self.timers.schedule(f"inspection:{label}", INSPECTION, due_at, {"period": label})

    async def on_inspection_due(self, timer: Timer) -> None:
        """Publish the period the timer was set for, then schedule the next publications."""
        await self.publish(str(timer.payload["period"]))
        await self.schedule_next()
