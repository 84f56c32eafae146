"""Alert rules and KPI panels give the right numbers: `promtool test rules` runs the rule unit tests of
deploy/prometheus/tests (every rule must be tested there) and the dashboards' NPS, SLA and dead-letter
expressions on series whose expected results are worked out by hand; every series they query is one a
service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from deploytools import DASHBOARDS_DIR, RULE_TESTS_DIR, RULES_DIR, run_promtool
from harness import ROOT


def rules() -> list[dict[str, Any]]:
    return [r for path in sorted(RULES_DIR.glob("*.yml")) for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"]]  # fmt: skip


def panel_expr(board: str, title: str) -> str:
    """The PromQL of a dashboard panel's single target, with Grafana's `$grid` set to all grids."""
    panels = json.loads((DASHBOARDS_DIR / f"{board}.json").read_text())["panels"]
    [panel] = [p for p in panels if p["title"] == title]
    [target] = panel["targets"]
    return str(target["expr"]).replace("$grid", ".*")


def test_every_rule_passes_its_promtool_unit_tests() -> None:
    test_files = sorted(RULE_TESTS_DIR.glob("*.yml"))
    assert test_files, "no promtool rule tests in deploy/prometheus/tests"
    done = run_promtool("test", "rules", *map(str, test_files))
    assert done.returncode == 0, done.stdout + done.stderr

    firing_tested: set[str] = set()
    expressions_tested: set[str] = set()
    for path in test_files:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    firing_tested.add(check["alertname"])
            expressions_tested |= {e["expr"] for e in case.get("promql_expr_test", [])}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    records = {r["record"] for r in rules() if "record" in r}
    assert alerts - firing_tested == set(), "alerts without a test that makes them fire"
    assert records - expressions_tested == set(), "recording rules without a promql_expr_test"


def test_every_service_has_an_absent_alert() -> None:
    from harness import SERVICE_NAMES

    [absent] = [r for r in rules() if r.get("alert") == "AftersalesServiceAbsent"]
    assert set(re.findall(r'absent\(up\{job="aftersales-([a-z]+)"\}\)', absent["expr"])) == set(SERVICE_NAMES)


def constant(series: str, value: float) -> dict[str, str]:
    return {"series": series, "values": f"{value:g}x90"}


# NPS answers by grid and group. north: 6 promoters, 2 passives, 2 detractors -> 100 * (6 - 2) / 10 = 40;
# south: no promoter series at all, 3 passives, 3 detractors -> 100 * (0 - 3) / 6 = -50;
# east: 4 promoters, no detractor series -> 100. All grids: 100 * (10 - 5) / 20 = 25.
# (With `or` binding looser than `-`, the old panel gave 100 * 10 / 20 = 50 for all grids.)
NPS_ANSWERS = {
    ("north", "promoter"): 6,
    ("north", "passive"): 2,
    ("north", "detractor"): 2,
    ("south", "passive"): 3,
    ("south", "detractor"): 3,
    ("east", "promoter"): 4,
}


def kpi_panel_tests() -> list[dict[str, Any]]:
    nps_series = [
        constant(f'aftersales_kpi_nps_responses_total{{grid="{grid}", group="{group}"}}', n)
        for (grid, group), n in NPS_ANSWERS.items()
    ]
    breach_rate = panel_expr("operations-overview", "SLA breach rate: breaches per created ticket (1 h)")
    by_clock = panel_expr("operations-overview", "SLA breaches by clock (1 h)")
    by_grid = panel_expr("grid-performance", "SLA breaches (24 h)")
    parked = panel_expr("service-health", "Dead-lettered messages (1 h)")
    return [
        {
            # DLQ depth exported at 0 from start-up; 2 parked at minute 30, 1 more at 40: 3 in the last hour,
            # the first ones included; a topic without parked messages shows 0.
            "name": "dead-lettered messages in the last hour",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'aftersales_dlq_depth_messages{topic="aftersales.tickets.v1"}',
                    "values": "0x29 2x10 3x30",
                },
                {"series": 'aftersales_dlq_depth_messages{topic="aftersales.feedback.v1"}', "values": "7x70"},
            ],
            "promql_expr_test": [
                {
                    "expr": parked,
                    "eval_time": "60m",
                    "exp_samples": [
                        {"labels": '{topic="aftersales.tickets.v1"}', "value": 3},
                        {"labels": '{topic="aftersales.feedback.v1"}', "value": 0},
                    ],
                }
            ],
        },
        {
            "name": "NPS, overall and by grid",
            "interval": "1m",
            "input_series": nps_series,
            "promql_expr_test": [
                {
                    "expr": panel_expr("operations-overview", "NPS"),
                    "eval_time": "5m",
                    "exp_samples": [{"labels": "{}", "value": 25}],
                },
                {
                    "expr": panel_expr("grid-performance", "NPS by grid"),
                    "eval_time": "5m",
                    "exp_samples": [
                        {"labels": '{grid="north"}', "value": 40},
                        {"labels": '{grid="south"}', "value": -50},
                        {"labels": '{grid="east"}', "value": 100},
                    ],
                },
            ],
        },
        {
            # 10 tickets a minute in two label sets, 1 response and 1 resolution breach a minute:
            # 120 breaches / 600 tickets in the last hour = 0.2; 60 breaches per clock.
            "name": "SLA breach rate and breaches by clock",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'aftersales_kpi_tickets_created_total{channel="web", priority="p3"}',
                    "values": "0+6x80",
                },
                {
                    "series": 'aftersales_kpi_tickets_created_total{channel="iot", priority="p2"}',
                    "values": "0+4x80",
                },
                {
                    "series": 'aftersales_kpi_sla_breaches_total{clock="response", grid="north"}',
                    "values": "0+1x80",
                },
                {
                    "series": 'aftersales_kpi_sla_breaches_total{clock="resolution", grid="north"}',
                    "values": "0+1x80",
                },
            ],
            "promql_expr_test": [
                {"expr": breach_rate, "eval_time": "70m", "exp_samples": [{"labels": "{}", "value": 0.2}]},
                {
                    "expr": by_clock,
                    "eval_time": "70m",
                    "exp_samples": [
                        {"labels": '{clock="response"}', "value": 60},
                        {"labels": '{clock="resolution"}', "value": 60},
                    ],
                },
            ],
        },
        {
            # A fresh platform: no ticket and no breach series yet. 0, not +Inf, NaN or "No data".
            "name": "SLA panels with no tickets",
            "interval": "1m",
            "input_series": [constant('aftersales_kpi_backlog_tickets{grid="north"}', 0)],
            "promql_expr_test": [
                {"expr": breach_rate, "eval_time": "70m", "exp_samples": [{"labels": "{}", "value": 0}]},
                {"expr": by_clock, "eval_time": "70m", "exp_samples": [{"labels": "{}", "value": 0}]},
            ],
        },
        {
            # Tickets created earlier breach in an hour without new tickets: the ratio counts breaches per
            # one ticket (3), never +Inf.
            "name": "SLA breach rate with breaches but no new tickets",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'aftersales_kpi_tickets_created_total{channel="web", priority="p3"}',
                    "values": "50x80",
                },
                {
                    "series": 'aftersales_kpi_sla_breaches_total{clock="resolution", grid="north"}',
                    "values": "0x64 3x15",
                },
            ],
            "promql_expr_test": [
                {"expr": breach_rate, "eval_time": "70m", "exp_samples": [{"labels": "{}", "value": 3}]},
            ],
        },
        {
            # One response breach an hour in north over 30 hours: 24 in the last 24 h; south has a backlog
            # but never breached: 0 rather than missing.
            "name": "SLA breaches by grid over 24 hours",
            "interval": "1h",
            "input_series": [
                {
                    "series": 'aftersales_kpi_sla_breaches_total{clock="response", grid="north"}',
                    "values": "0+1x30",
                },
                {"series": 'aftersales_kpi_backlog_tickets{grid="north"}', "values": "5x30"},
                {"series": 'aftersales_kpi_backlog_tickets{grid="south"}', "values": "3x30"},
            ],
            "promql_expr_test": [
                {
                    "expr": by_grid,
                    "eval_time": "30h",
                    "exp_samples": [
                        {"labels": '{clock="response", grid="north"}', "value": 24},
                        {"labels": '{grid="south"}', "value": 0},
                    ],
                }
            ],
        },
    ]


def test_kpi_panels_compute_nps_and_sla_rates_as_worked_out_by_hand(tmp_path: Path) -> None:
    test_file = tmp_path / "kpi-panels.test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [], "tests": kpi_panel_tests()}, sort_keys=False))
    done = run_promtool("test", "rules", str(test_file))
    assert done.returncode == 0, done.stdout + done.stderr


SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def exported_names() -> list[re.Pattern[str]]:
    """Metric names the services and shared library define (an f-string's fields match any name part),
    and FastStream's middleware metrics."""
    sources = [*ROOT.glob("services/*/src/**/*.py"), *ROOT.glob("shared/src/**/*.py")]
    literals = {m for path in sources for m in re.findall(r'"(aftersales_[a-z0-9_{}]+)"', path.read_text())}
    import faststream.prometheus.container as container

    literals |= {f"faststream_{m}" for m in re.findall(r'"([a-z_]+)"', Path(container.__file__).read_text())}
    return [re.compile(re.sub(r"\\{[a-z_]+\\}", "[a-z0-9_]+", re.escape(name))) for name in literals]


def queried_names() -> dict[str, str]:
    """Series names the dashboards and rules query -> where."""
    queried: dict[str, str] = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
        exprs += [v["definition"] for v in board.get("templating", {}).get("list", []) if "definition" in v]
        for expr in exprs:
            for name in re.findall(r"\b((?:aftersales|faststream)_[a-z0-9_]+)", expr):
                queried[name] = path.name
    for rule in rules():
        for name in re.findall(r"\b((?:aftersales|faststream)_[a-z0-9_]+)", rule["expr"]):
            queried[name] = f"rule {rule.get('alert') or rule.get('record')}"
    return queried


def test_dashboards_and_rules_query_only_series_a_service_exports() -> None:
    exported = exported_names()

    def is_exported(name: str) -> bool:
        bases = {name} | {name.removesuffix(s) for s in SUFFIXES if name.endswith(s)}
        return any(pattern.fullmatch(base) for pattern in exported for base in bases)

    assert is_exported("aftersales_kpi_sla_breaches_total") and is_exported("aftersales_dlq_depth_messages")
    assert not is_exported("aftersales_kpi_sla_breach_total")

    queried = queried_names()
    assert len(queried) >= 15
    missing = {name: where for name, where in queried.items() if not is_exported(name)}
    assert not missing, f"queried but exported by no service: {missing}"
