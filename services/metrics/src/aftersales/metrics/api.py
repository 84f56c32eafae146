"""HTTP routes of the metrics service: KPI tables, technician performance (绩效考核), inspection reports."""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from aftersales.metrics import inspection
from aftersales.metrics.domain import (
    GroupFigures,
    Period,
    TechnicianStanding,
    csat_distribution,
    kpis,
    stock_figures,
)
from aftersales.metrics.service import Reporting
from aftersales.shared.errors import Forbidden, InvalidRequest
from aftersales.shared.roles import Staff, Supervisor, service_of
from aftersales.shared.settings import Scope

Service = Annotated[Reporting, service_of("reporting", Reporting)]

MAX_RANGE_DAYS = 400
DEFAULT_RANGE_DAYS = 30
# Days and report periods the API answers for: the calendar's extremes are typos (and overflow).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
_PERIOD = re.compile(r"(\d{4})-(W\d{2}|\d{2})")
PeriodLabel = Annotated[
    str, Path(max_length=8, description="ISO week 2026-W48 or month 2026-11 (years 2000-2999)")
]


class GroupBy(StrEnum):
    ALL = "all"
    GRID = "grid"
    TEAM = "team"
    TECHNICIAN = "technician"
    CHANNEL = "channel"
    CATEGORY = "category"
    PRIORITY = "priority"
    PRODUCT = "product"


class ReportFormat(StrEnum):
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"


class KpiRowRead(BaseModel):
    value: str = Field(description="the dimension value, e.g. a grid id")
    period: str = Field(description="2026-11-24, 2026-W48, 2026-11, or 'total' without ?period")
    counts: dict[str, int] = Field(description="the counters every KPI is derived from")
    kpis: dict[str, float | None] = Field(description="None where the denominator is zero")
    csat_distribution: dict[str, int]
    backlog: int | None = Field(default=None, description="open tickets now (only without ?period)")
    parts_consumed: int = Field(
        default=0, description="spare parts taken from stock for service reports (less those given back)"
    )
    parts_consumed_cost: float | None = Field(
        default=None,
        description="the cost of the consumed parts that carry a unit cost, in currency units (yuan); "
        "None when none of them does",
    )
    stock_low_alerts: int = Field(default=0, description="low-stock alerts (stock-low) of stock locations")


class KpiTableRead(BaseModel):
    group_by: GroupBy
    period: Period | None
    from_: date = Field(alias="from")
    to: date
    timezone: str
    rows: list[KpiRowRead]

    model_config = {"populate_by_name": True}


class TechnicianPerformanceRead(BaseModel):
    technician_id: str
    from_: date = Field(alias="from")
    to: date
    counts: dict[str, int]
    kpis: dict[str, float | None]
    csat_distribution: dict[str, int]
    open_tickets: int
    benchmark: dict[str, float | None] = Field(description="the same KPIs over all technicians")
    rank_by_resolved: int | None = Field(description="1 = most tickets resolved in the range")
    technicians_ranked: int

    model_config = {"populate_by_name": True}

    @classmethod
    def of(
        cls, technician_id: str, start: date, end: date, t: TechnicianStanding
    ) -> TechnicianPerformanceRead:
        return cls(
            technician_id=technician_id,
            from_=start,
            to=end,
            counts=t.counters,
            kpis=kpis(t.counters),
            csat_distribution=csat_distribution(t.counters),
            open_tickets=t.open_tickets,
            benchmark=kpis(t.benchmark),
            rank_by_resolved=t.rank_by_resolved,
            technicians_ranked=t.technicians_ranked,
        )


def _row(g: GroupFigures) -> KpiRowRead:
    return KpiRowRead(
        value=g.value,
        period=g.period,
        counts=g.counters,
        kpis=g.kpis(),
        csat_distribution=csat_distribution(g.counters),
        backlog=g.current.get("open", 0) if g.period == "total" else None,
        **stock_figures(g.counters),
    )


def _period(label: str) -> str:
    """Return a report period label that is exactly a week or month of a year the API answers for."""
    m = _PERIOD.fullmatch(label)
    if m is None or not FIRST_DAY.year <= int(m[1]) <= LAST_DAY.year:
        raise InvalidRequest(
            "period must be an ISO week like 2026-W48 or a month like 2026-11, in 2000-2999", field="period"
        )
    return label


def _range(start: date | None, end: date | None, zone_today: date) -> tuple[date, date]:
    for name, day in (("from", start), ("to", end)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise InvalidRequest(f"'{name}' must lie in {FIRST_DAY.year}-{LAST_DAY.year}", field=name)
    end = end or zone_today
    start = start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise InvalidRequest("'from' must not be after 'to'", field="from")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidRequest(f"the range may span at most {MAX_RANGE_DAYS} days", field="from")
    return start, end


router = APIRouter(prefix="/v1", tags=["kpis"])


@router.get("/kpis", response_model=KpiTableRead, response_model_by_alias=True, summary="KPIs by dimension")
async def get_kpis(
    _: Supervisor,
    reporting: Service,
    group_by: GroupBy = GroupBy.ALL,
    from_: Annotated[date | None, Query(alias="from", description="first day (KPI time zone)")] = None,
    to: Annotated[date | None, Query(description="last day, inclusive")] = None,
    period: Period | None = None,
) -> KpiTableRead:
    """Return each value of `group_by` with its counters and KPIs (per day/week/month with `period`)."""
    start, end = _range(from_, to, reporting.today())
    rows = await reporting.kpi_table(group_by.value, start, end, period)
    return KpiTableRead(
        group_by=group_by,
        period=period,
        from_=start,
        to=end,
        timezone=str(reporting.zone),
        rows=[_row(r) for r in rows],
    )


@router.get(
    "/technicians/{technician_id}/performance",
    response_model=TechnicianPerformanceRead,
    response_model_by_alias=True,
    summary="A technician's performance review (绩效考核)",
)
async def technician_performance(
    technician_id: Annotated[str, Path(max_length=100)],
    principal: Staff,
    reporting: Service,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> TechnicianPerformanceRead:
    """Return a technician's KPIs over the range, benchmarked against all technicians."""
    if not (principal.has(Scope.SUPERVISOR)) and principal.subject != technician_id:
        raise Forbidden("technicians may only read their own performance")
    start, end = _range(from_, to, reporting.today())
    standing = await reporting.technician_performance(technician_id, start, end)
    return TechnicianPerformanceRead.of(technician_id, start, end, standing)


@router.get("/reports/inspections", summary="The inspection report (巡检) of a week or month")
async def inspection_report(
    _: Supervisor,
    reporting: Service,
    period: Annotated[str, Query(max_length=8, description="ISO week 2026-W48 or month 2026-11")],
    format: ReportFormat = ReportFormat.JSON,
) -> Response:
    """Return the report with its findings as JSON, Markdown or HTML."""
    report = await reporting.inspection_report(_period(period))
    return _render(report, format)


@router.post(
    "/reports/inspections/{period}/publish",
    summary="Publish a period's inspection report to aftersales.reports.v1 (once)",
)
async def publish(period: PeriodLabel, _: Supervisor, reporting: Service) -> dict[str, Any]:
    """Publish the report now; publishing the same period again returns the stored report."""
    report, created = await reporting.publish(_period(period))
    report = {k: v for k, v in report.items() if k != "_id"}
    return {"published": created, "report": report}


def _render(report: dict[str, Any], fmt: ReportFormat) -> Response:
    if fmt is ReportFormat.MARKDOWN:
        return PlainTextResponse(inspection.to_markdown(report), media_type="text/markdown; charset=utf-8")
    if fmt is ReportFormat.HTML:
        return HTMLResponse(inspection.to_html(report))
    return JSONResponse(report)
