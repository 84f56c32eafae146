"""On-site work (fieldwork's events) for tickets T1 and T3 of the metrics scenario (test_metrics.PLANS), and
the KPIs they give by grid, computed here from the plan (not through the metrics service's code).

T1 (grid G-A, tech-a1, resolved at minute 70): one visit with a part → a first-time fix.
T3 (grid G-B, tech-b1, resolved at 50, reopened at 200, resolved again at 260): a visit before the first
resolution, a customer no-show after the reopening and a second visit → a repeat visit, no parts.
Beside them, one low-stock alert of grid G-A's warehouse (`stock_low_events`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from test_metrics import m

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentNoShow,
    ServiceReportSigned,
    StockConsumed,
    StockLow,
    VisitCheckedIn,
    VisitCheckedOut,
    VisitDeparted,
)
from aftersales.shared.envelope import CloudEvent, new_event

SOURCE = "/aftersales/fieldwork"


@dataclass
class FieldVisitPlan:
    appointment: str
    departed: int  # minutes after test_metrics.DAY
    travel_s: int
    work_s: int


@dataclass
class FieldPlan:
    tid: str
    grid: str
    tech: str
    visits: list[FieldVisitPlan]
    no_shows: list[tuple[str, int]] = field(default_factory=list)  # (appointment, minute), customer absent
    parts: list[tuple[str, int, int]] = field(default_factory=list)  # (line id, quantity, unit cost in fen)


FIELD_PLANS = [
    FieldPlan("T1", "G-A", "tech-a1", [FieldVisitPlan("A1", 30, 900, 1200)], parts=[("L1", 2, 1500)]),
    FieldPlan(
        "T3",
        "G-B",
        "tech-b1",
        [FieldVisitPlan("A1", 15, 600, 1200), FieldVisitPlan("A3", 200, 1800, 600)],
        no_shows=[("A2", 215)],
    ),
]


def _visit(tid: str, tech: str, v: FieldVisitPlan) -> list[Any]:
    a: dict[str, Any] = dict(appointment_id=f"{tid}-{v.appointment}", ticket_id=tid, technician_id=tech)
    arrived = v.departed + v.travel_s // 60
    return [
        AppointmentBooked(
            **a,
            occurred_at=m(v.departed - 10),
            window_start=m(v.departed),
            window_end=m(v.departed + 120),
            booked_by="desk",
        ),
        VisitDeparted(**a, occurred_at=m(v.departed)),
        VisitCheckedIn(**a, occurred_at=m(arrived), travel_s=v.travel_s),
        VisitCheckedOut(**a, occurred_at=m(arrived + v.work_s // 60), work_s=v.work_s),
    ]


def field_events(suffix: str = "") -> list[tuple[Topic, CloudEvent]]:
    """Every field plan's events as CloudEvents, for the tickets `T1<suffix>` and `T3<suffix>`."""
    out: list[tuple[Topic, CloudEvent]] = []
    for p in FIELD_PLANS:
        tid = f"{p.tid}{suffix}"
        data: list[Any] = [ev for v in p.visits for ev in _visit(tid, p.tech, v)]
        for appointment, minute in p.no_shows:
            data.append(
                AppointmentNoShow(
                    appointment_id=f"{tid}-{appointment}",
                    ticket_id=tid,
                    technician_id=p.tech,
                    occurred_at=m(minute),
                    absent="customer",
                )
            )
        report = f"R-{tid}"
        for line, quantity, cost in p.parts:
            data.append(
                StockConsumed(
                    location_id=f"van:{p.tech}",
                    part_id="P-filter",
                    occurred_at=m(p.visits[0].departed + 20),
                    quantity=quantity,
                    report_id=report,
                    ticket_id=tid,
                    line_id=line,
                    unit_cost_cents=cost,
                )
            )
        data.append(
            ServiceReportSigned(
                report_id=report,
                ticket_id=tid,
                technician_id=p.tech,
                content_sha256="ab" * 32,
                signed_at=m(p.visits[0].departed + 40),
                resolution_code="replaced_part",
            )
        )
        out += [(Topic.FIELDWORK, new_event(d, source=SOURCE, subject=tid)) for d in data]
    return out


LOW_STOCK_GRID = "G-A"


def stock_low_events() -> list[tuple[Topic, CloudEvent]]:
    """One low-stock alert of LOW_STOCK_GRID's warehouse, in the scenario's day."""
    location = f"warehouse:{LOW_STOCK_GRID}"
    data = StockLow(location_id=location, part_id="P-filter", occurred_at=m(40), threshold=2)
    return [(Topic.FIELDWORK, new_event(data, source=SOURCE, subject=location))]


def expected_stock_figures() -> dict[str, tuple[int, float | None, int]]:
    """Each plan's grid: (parts consumed, their cost in yuan or None, low-stock alerts)."""
    return {
        p.grid: (
            sum(q for _, q, _ in p.parts),
            sum(q * c for _, q, c in p.parts) / 100 if p.parts else None,
            int(p.grid == LOW_STOCK_GRID),
        )
        for p in FIELD_PLANS
    }


def expected_field_kpis() -> dict[str, dict[str, float | None]]:
    """The on-site KPIs of each grid (every plan's ticket is resolved, each plan is one grid)."""
    out: dict[str, dict[str, float | None]] = {}
    for p in FIELD_PLANS:
        appointments = len(p.visits) + len(p.no_shows)
        cost = sum(q * c for _, q, c in p.parts)
        out[p.grid] = {
            "first_time_fix_rate": 1.0 if len(p.visits) == 1 else 0.0,
            "appointment_kept_rate": round(len(p.visits) / appointments, 4),
            "avg_travel_s": sum(v.travel_s for v in p.visits) / len(p.visits),
            "avg_work_s": sum(v.work_s for v in p.visits) / len(p.visits),
            "avg_parts_per_field_resolution": float(sum(q for _, q, _ in p.parts)),
            "avg_parts_cost_per_field_resolution": cost / 100,
        }
    return out
