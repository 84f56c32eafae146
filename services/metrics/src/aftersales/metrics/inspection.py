"""The periodic inspection report (巡检): findings with the figures behind them, their renderings, and the
calendar of their publication."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from aftersales.metrics.domain import Period, ReportPeriod, kpis


@dataclass(frozen=True, slots=True)
class Targets:
    sla_response_compliance: float = 0.9
    sla_resolution_compliance: float = 0.9
    csat_average: float = 4.0
    first_contact_resolution_rate: float = 0.7
    technician_capacity_tickets: int = 8
    rising_min_tickets: int = 3
    rising_growth: float = 0.5  # +50 % over the previous period


def grids_under_target(by_grid: Mapping[str, Mapping[str, int]], t: Targets) -> list[dict[str, Any]]:
    """Return one finding per grid whose KPI misses a target in the period."""
    targets = {
        "sla_response_compliance": t.sla_response_compliance,
        "sla_resolution_compliance": t.sla_resolution_compliance,
        "csat_average": t.csat_average,
        "first_contact_resolution_rate": t.first_contact_resolution_rate,
    }
    out = []
    for grid, counters in sorted(by_grid.items()):
        figures = kpis(counters)
        missed = {
            k: {"value": figures[k], "target": v}
            for k, v in targets.items()
            if (value := figures[k]) is not None and value < v
        }
        if missed:
            out.append(
                {
                    "kind": "grid_under_target",
                    "severity": "high" if len(missed) > 1 else "medium",
                    "subject": grid,
                    "summary": f"grid {grid} missed {', '.join(sorted(missed))}",
                    "figures": {"missed": missed, "tickets_created": int(counters.get("created", 0))},
                }
            )
    return out


def rising(
    dimension: str, now: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]], t: Targets
) -> list[dict[str, Any]]:
    """Return categories/products whose ticket count grew by `rising_growth` or more (common problems)."""
    out = []
    for value, counters in sorted(now.items()):
        current = int(counters.get("created", 0))
        previous = int(before.get(value, {}).get("created", 0))
        if value == "unknown" or current < t.rising_min_tickets:
            continue
        growth = (current - previous) / previous if previous else None
        if previous == 0 or (growth is not None and growth >= t.rising_growth):
            out.append(
                {
                    "kind": f"rising_{dimension}",
                    "severity": "medium",
                    "subject": value,
                    "summary": f"{dimension} {value}: {current} tickets, previous period {previous}",
                    "figures": {
                        "tickets": current,
                        "previous_tickets": previous,
                        "growth": None if growth is None else round(growth, 4),
                    },
                }
            )
    return out


def over_capacity(open_by_technician: Mapping[str, Mapping[str, int]], t: Targets) -> list[dict[str, Any]]:
    out = []
    for technician, counters in sorted(open_by_technician.items()):
        open_now = int(counters.get("open", 0))
        if technician != "unassigned" and open_now > t.technician_capacity_tickets:
            out.append(
                {
                    "kind": "technician_over_capacity",
                    "severity": "medium",
                    "subject": technician,
                    "summary": f"technician {technician} holds {open_now} open tickets",
                    "figures": {"open_tickets": open_now, "capacity_tickets": t.technician_capacity_tickets},
                }
            )
    return out


def overdue_findings(overdue: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for kind, items in (("complaints", overdue["complaints"]), ("followups", overdue["followups"])):
        if not items:
            continue
        by_grid: dict[str, int] = {}
        for item in items:
            grid = item.get("grid") or "unassigned"
            by_grid[grid] = by_grid.get(grid, 0) + 1
        oldest = max(item["overdue_s"] for item in items)
        out.append(
            {
                "kind": f"overdue_{kind}",
                "severity": "high" if kind == "complaints" else "medium",
                "subject": kind,
                "summary": f"{len(items)} {kind.replace('followups', 'follow-ups')} overdue",
                "figures": {
                    "count": len(items),
                    "by_grid": dict(sorted(by_grid.items())),
                    "oldest_overdue_s": round(oldest, 1),
                    "ids": sorted(i.get("complaint_id") or i.get("visit_id") or "" for i in items)[:50],
                },
            }
        )
    return out


def summary(totals: Mapping[str, int]) -> dict[str, Any]:
    return {
        "tickets_created": int(totals.get("created", 0)),
        "tickets_resolved": int(totals.get("resolved", 0)),
        **kpis(totals),
    }


def to_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Inspection report {report['period']}",
        "",
        f"Period {report['period_start']} to {report['period_end']}, generated {report['generated_at']}.",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in report["summary"].items()]
    lines += ["", f"## Findings ({len(report['findings'])})", ""]
    if not report["findings"]:
        lines.append("No findings: every grid met its targets.")
    for f in report["findings"]:
        lines.append(f"- **{f['kind']}** ({f['severity']}) {f['summary']}")
        for k, v in f["figures"].items():
            lines.append(f"  - {k}: {_fmt(v)}")
    return "\n".join(lines) + "\n"


def to_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>" for k, v in report["summary"].items())
    items = "".join(
        f"<li><strong>{e(f['kind'])}</strong> ({e(f['severity'])}) {e(f['summary'])}<ul>"
        + "".join(f"<li>{e(k)}: {e(_fmt(v))}</li>" for k, v in f["figures"].items())
        + "</ul></li>"
        for f in report["findings"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Inspection {e(report['period'])}</title></head>"
        f"<body><h1>Inspection report {e(report['period'])}</h1>"
        f"<p>Period {e(str(report['period_start']))} to {e(str(report['period_end']))}</p>"
        f"<h2>Summary</h2><table>{rows}</table><h2>Findings ({len(report['findings'])})</h2>"
        f"<ul>{items or '<li>No findings</li>'}</ul></body></html>"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
