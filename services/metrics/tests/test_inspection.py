"""Inspection findings and the publication calendar."""

from __future__ import annotations

from datetime import date

from aftersales.metrics import inspection
from aftersales.metrics.domain import Period
from aftersales.metrics.inspection import next_publication

T = inspection.Targets(technician_capacity_tickets=3, rising_min_tickets=3, rising_growth=0.5)


def test_grid_under_target_names_the_missed_kpis_with_figures() -> None:
    by_grid = {
        "G1": {"created": 4, "response_concluded": 4, "response_breached": 2, "surveys": 2, "csat_sum": 6},
        "G2": {"created": 4, "response_concluded": 4, "response_breached": 0, "surveys": 1, "csat_sum": 5},
    }
    [finding] = inspection.grids_under_target(by_grid, T)
    assert finding["subject"] == "G1"
    assert finding["figures"]["missed"]["sla_response_compliance"] == {"value": 0.5, "target": 0.9}
    assert finding["figures"]["missed"]["csat_average"] == {"value": 3.0, "target": 4.0}
    assert finding["severity"] == "high"


def test_rising_categories_compare_with_the_previous_period() -> None:
    now = {"hardware_fault": {"created": 6}, "usage_question": {"created": 4}, "installation": {"created": 2}}
    before = {"hardware_fault": {"created": 3}, "usage_question": {"created": 4}}
    findings = inspection.rising("category", now, before, T)
    assert [(f["subject"], f["figures"]["growth"]) for f in findings] == [("hardware_fault", 1.0)]


def test_technicians_over_capacity_and_overdue_items() -> None:
    found = inspection.over_capacity(
        {"tech-1": {"open": 4}, "tech-2": {"open": 3}, "unassigned": {"open": 9}}, T
    )
    assert [f["subject"] for f in found] == ["tech-1"]
    overdue = {
        "complaints": [{"complaint_id": "K1", "grid": "G1", "overdue_s": 10.0}],
        "followups": [
            {"visit_id": "V1", "grid": None, "overdue_s": 5.0},
            {"visit_id": "V2", "grid": "G1", "overdue_s": 7.0},
        ],
    }
    c, v = inspection.overdue_findings(overdue)
    assert c["figures"]["count"] == 1 and c["kind"] == "overdue_complaints"
    assert v["figures"]["by_grid"] == {"G1": 1, "unassigned": 1}
    assert v["figures"]["oldest_overdue_s"] == 7.0


def test_renderings_show_every_finding() -> None:
    report = {
        "period": "2026-W48",
        "period_start": "2026-11-23",
        "period_end": "2026-11-29",
        "generated_at": "now",
        "summary": {"tickets_created": 3, "csat_average": None},
        "findings": [
            {
                "kind": "overdue_complaints",
                "severity": "high",
                "summary": "1 complaints overdue",
                "figures": {"count": 1},
            }
        ],
    }
    md = inspection.to_markdown(report)
    assert "overdue_complaints" in md and "| tickets_created | 3 |" in md
    assert "<strong>overdue_complaints</strong>" in inspection.to_html(report)


def test_next_publication_covers_the_period_just_ended() -> None:
    assert next_publication(date(2026, 11, 25), Period.WEEK) == (date(2026, 11, 30), "2026-W48")
    assert next_publication(date(2026, 12, 31), Period.MONTH) == (date(2027, 1, 1), "2026-12")
