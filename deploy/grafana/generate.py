"""Generate the Grafana dashboards in deploy/grafana/dashboards/: uv run python deploy/grafana/generate.py

Each panel is (title, kind, [PromQL targets], unit). Queries may use Grafana's `$__rate_interval` and the
`$grid` variable (grid dashboard); everything else is plain PromQL, evaluated by the integration test
against a real Prometheus.
"""

# ruff: noqa: E501  (PromQL reads best on one line)
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "aftersales-prometheus"}
RI = "$__rate_interval"

Panel = tuple[str, str, list[tuple[str, str]], str]  # title, kind, [(expr, legend)], unit

OPERATIONS: list[Panel] = [
    (
        "Intake rate by channel",
        "timeseries",
        [(f"sum by (channel) (rate(aftersales_kpi_tickets_created_total[{RI}]))", "{{channel}}")],
        "reqps",
    ),
    (
        "Tickets created (24 h)",
        "stat",
        [("sum(increase(aftersales_kpi_tickets_created_total[24h]))", "created")],
        "short",
    ),
    (
        "Tickets created by category (24 h)",
        "bargauge",
        [("sum by (category) (increase(aftersales_kpi_tickets_created_total[24h]))", "{{category}}")],
        "short",
    ),
    (
        "Backlog by grid",
        "timeseries",
        [("sum by (grid) (aftersales_kpi_backlog_tickets)", "{{grid}}")],
        "short",
    ),
    (
        "Assignment latency p50 / p90 (1 h)",
        "timeseries",
        [
            (
                "histogram_quantile(0.5, sum by (le) (increase(aftersales_kpi_assignment_latency_seconds_bucket[1h])))",
                "p50",
            ),
            (
                "histogram_quantile(0.9, sum by (le) (increase(aftersales_kpi_assignment_latency_seconds_bucket[1h])))",
                "p90",
            ),
        ],
        "s",
    ),
    (
        "First response p90 by priority (1 h)",
        "timeseries",
        [
            (
                "histogram_quantile(0.9, sum by (priority, le) "
                "(increase(aftersales_kpi_first_response_seconds_bucket[1h])))",
                "{{priority}}",
            )
        ],
        "s",
    ),
    (
        "Resolution time p90 by priority (1 h)",
        "timeseries",
        [
            (
                "histogram_quantile(0.9, sum by (priority, le) (increase(aftersales_kpi_resolution_seconds_bucket[1h])))",
                "{{priority}}",
            )
        ],
        "s",
    ),
    (
        "SLA breaches by clock (1 h)",
        "timeseries",
        # The series appear with the first breach: 0 (not "No data") until then.
        [
            (
                "sum by (clock) (increase(aftersales_kpi_sla_breaches_total[1h])) or on () vector(0)",
                "{{clock}}",
            )
        ],
        "short",
    ),
    (
        "SLA breach rate: breaches per created ticket (1 h)",
        "stat",
        [
            (
                # = the aftersales:sla_breach_ratio:1h rule: 0, not NaN or +Inf, without tickets
                "(sum(increase(aftersales_kpi_sla_breaches_total[1h])) or vector(0))"
                " / clamp_min(sum(increase(aftersales_kpi_tickets_created_total[1h])) or vector(0), 1)",
                "breach rate",
            )
        ],
        "percentunit",
    ),
    ("CSAT average by grid", "bargauge", [("aftersales_kpi_csat_average", "{{grid}}")], "short"),
    (
        "CSAT distribution",
        "barchart",
        [("sum by (score) (aftersales_kpi_csat_responses_total)", "{{score}}")],
        "short",
    ),
    (
        "NPS",
        "stat",
        [
            (
                # `or` binds looser than `-`: each side of the difference needs its own parentheses
                '100 * ((sum(aftersales_kpi_nps_responses_total{group="promoter"}) or vector(0))'
                ' - (sum(aftersales_kpi_nps_responses_total{group="detractor"}) or vector(0)))'
                " / sum(aftersales_kpi_nps_responses_total)",
                "NPS",
            )
        ],
        "short",
    ),
    (
        "Complaints open / overdue",
        "stat",
        [
            ("aftersales_kpi_complaints_open", "open"),
            ("aftersales_kpi_complaints_overdue", "overdue"),
        ],
        "short",
    ),
    (
        "Follow-ups pending / overdue",
        "stat",
        [
            ("aftersales_kpi_followups_pending", "pending"),
            ("aftersales_kpi_followups_overdue", "overdue"),
        ],
        "short",
    ),
    (
        "Follow-ups completed by outcome (24 h)",
        "bargauge",
        [("sum by (outcome) (increase(aftersales_kpi_followups_completed_total[24h]))", "{{outcome}}")],
        "short",
    ),
]

HEALTH: list[Panel] = [
    ("Services up", "stat", [('up{job=~"aftersales-.*"}', "{{job}}")], "short"),
    (
        "HTTP request rate",
        "timeseries",
        [(f"sum by (job) (rate(aftersales_http_requests_total[{RI}]))", "{{job}}")],
        "reqps",
    ),
    (
        "HTTP error ratio (4xx+5xx)",
        "timeseries",
        [
            (
                f'(sum by (job) (rate(aftersales_http_requests_total{{status=~"4..|5.."}}[{RI}]))'
                f" or sum by (job) (rate(aftersales_http_requests_total[{RI}])) * 0)"
                f" / sum by (job) (rate(aftersales_http_requests_total[{RI}]))",
                "{{job}}",
            )
        ],
        "percentunit",
    ),
    (
        "HTTP p95 latency",
        "timeseries",
        [
            (
                f"histogram_quantile(0.95, sum by (job, le) (rate(aftersales_http_request_duration_seconds_bucket[{RI}])))",
                "{{job}}",
            )
        ],
        "s",
    ),
    (
        "Kafka handler rate by status",
        "timeseries",
        [
            (
                f"sum by (job, handler, status) (rate(faststream_received_processed_messages_total[{RI}]))",
                "{{job}} {{handler}} {{status}}",
            )
        ],
        "ops",
    ),
    (
        "Kafka handler p95 duration",
        "timeseries",
        [
            (
                "histogram_quantile(0.95, sum by (job, le) "
                f"(rate(faststream_received_processed_messages_duration_seconds_bucket[{RI}])))",
                "{{job}}",
            )
        ],
        "s",
    ),
    (
        "Messages in process",
        "timeseries",
        [("sum by (job) (faststream_received_messages_in_process)", "{{job}}")],
        "short",
    ),
    (
        "Events handled by type",
        "timeseries",
        [(f"sum by (job, type) (rate(aftersales_events_handled_total[{RI}]))", "{{job}} {{type}}")],
        "ops",
    ),
    (
        "Published messages",
        "timeseries",
        [
            (
                f"sum by (job, destination, status) (rate(faststream_published_messages_total[{RI}]))",
                "{{job}} {{destination}} {{status}}",
            )
        ],
        "ops",
    ),
    (
        "Consumer lag",
        "timeseries",
        [("max by (group, topic) (aftersales_consumer_lag)", "{{group}} {{topic}}")],
        "short",
    ),
    (
        # The depth gauge exists at 0 from start-up, so the first parked message counts (a per-process
        # counter appears with its first message, which increase() never sees); max - min is exact.
        "Dead-lettered messages (1 h)",
        "timeseries",
        [
            (
                "max by (topic) (max_over_time(aftersales_dlq_depth_messages[1h])"
                " - min_over_time(aftersales_dlq_depth_messages[1h]))",
                "{{topic}}",
            )
        ],
        "short",
    ),
    (
        "Dead-letter topic depth",
        "bargauge",
        [("max by (topic) (aftersales_dlq_depth_messages)", "{{topic}}")],
        "short",
    ),
    ("Outbox backlog", "timeseries", [("max by (job) (aftersales_outbox_pending)", "{{job}}")], "short"),
]

GRID: list[Panel] = [
    (
        "Backlog",
        "timeseries",
        [('sum by (grid) (aftersales_kpi_backlog_tickets{grid=~"$grid"})', "{{grid}}")],
        "short",
    ),
    (
        "Waiting on customer",
        "timeseries",
        [('sum by (grid) (aftersales_kpi_waiting_customer_tickets{grid=~"$grid"})', "{{grid}}")],
        "short",
    ),
    (
        "SLA breaches (24 h)",
        "bargauge",
        [
            (
                'sum by (grid, clock) (increase(aftersales_kpi_sla_breaches_total{grid=~"$grid"}[24h]))'
                # grids without any breach yet show 0
                ' or on (grid) (sum by (grid) (aftersales_kpi_backlog_tickets{grid=~"$grid"}) * 0)',
                "{{grid}} {{clock}}",
            )
        ],
        "short",
    ),
    ("CSAT average", "bargauge", [('aftersales_kpi_csat_average{grid=~"$grid"}', "{{grid}}")], "short"),
    (
        "Survey answers (24 h)",
        "bargauge",
        [('sum by (grid) (increase(aftersales_kpi_csat_responses_total{grid=~"$grid"}[24h]))', "{{grid}}")],
        "short",
    ),
    (
        "Low CSAT share (1-2)",
        "bargauge",
        [
            (
                '(sum by (grid) (aftersales_kpi_csat_responses_total{grid=~"$grid", score=~"1|2"})'
                ' or sum by (grid) (aftersales_kpi_csat_responses_total{grid=~"$grid"}) * 0)'
                ' / sum by (grid) (aftersales_kpi_csat_responses_total{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "percentunit",
    ),
    (
        "NPS by grid",
        "bargauge",
        [
            (
                '100 * ((sum by (grid) (aftersales_kpi_nps_responses_total{grid=~"$grid", group="promoter"})'
                ' or sum by (grid) (aftersales_kpi_nps_responses_total{grid=~"$grid"}) * 0)'
                ' - (sum by (grid) (aftersales_kpi_nps_responses_total{grid=~"$grid", group="detractor"})'
                ' or sum by (grid) (aftersales_kpi_nps_responses_total{grid=~"$grid"}) * 0))'
                ' / sum by (grid) (aftersales_kpi_nps_responses_total{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "short",
    ),
]


# On-site work (issue 16): by grid only; per-technician figures are in GET /v1/kpis?group_by=technician.
# A grid without a first-time fix, a kept appointment or a no-show yet shows 0 (the `or ... * 0` halves).
FIELD: list[Panel] = [
    (
        "First-time fix rate",
        "bargauge",
        [
            (
                '(sum by (grid) (aftersales_kpi_field_resolutions_total{grid=~"$grid", fix="first_time"})'
                ' or sum by (grid) (aftersales_kpi_field_resolutions_total{grid=~"$grid"}) * 0)'
                ' / sum by (grid) (aftersales_kpi_field_resolutions_total{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "percentunit",
    ),
    (
        "Appointment kept rate",
        "bargauge",
        [
            (
                '(sum by (grid) (aftersales_kpi_field_appointments_total{grid=~"$grid", outcome="kept"})'
                ' or sum by (grid) (aftersales_kpi_field_appointments_total{grid=~"$grid"}) * 0)'
                ' / sum by (grid) (aftersales_kpi_field_appointments_total{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "percentunit",
    ),
    (
        "Average travel time",
        "bargauge",
        [
            (
                'sum by (grid) (aftersales_kpi_field_travel_seconds_sum{grid=~"$grid"})'
                ' / sum by (grid) (aftersales_kpi_field_travel_seconds_count{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "s",
    ),
    (
        "Average work time on site",
        "bargauge",
        [
            (
                'sum by (grid) (aftersales_kpi_field_work_seconds_sum{grid=~"$grid"})'
                ' / sum by (grid) (aftersales_kpi_field_work_seconds_count{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "s",
    ),
    (
        "Parts cost per field resolution",
        "bargauge",
        [
            (
                '(sum by (grid) (aftersales_kpi_field_parts_cost_total{grid=~"$grid"})'
                ' or sum by (grid) (aftersales_kpi_field_parts_costed_resolutions_total{grid=~"$grid"}) * 0)'
                ' / sum by (grid) (aftersales_kpi_field_parts_costed_resolutions_total{grid=~"$grid"})',
                "{{grid}}",
            )
        ],
        "currencyCNY",
    ),
    (
        "No-shows by absent party",
        "bargauge",
        [
            (
                'sum by (outcome) (aftersales_kpi_field_appointments_total{grid=~"$grid", outcome=~"no_show_.*"})',
                "{{outcome}}",
            )
        ],
        "short",
    ),
    (
        "On-site visits (24 h)",
        "bargauge",
        [('sum by (grid) (increase(aftersales_kpi_field_visits_total{grid=~"$grid"}[24h]))', "{{grid}}")],
        "short",
    ),
    (
        "Work time on site p90 (24 h)",
        "timeseries",
        [
            (
                "histogram_quantile(0.9, sum by (grid, le) "
                '(increase(aftersales_kpi_field_work_seconds_bucket{grid=~"$grid"}[24h])))',
                "{{grid}}",
            )
        ],
        "s",
    ),
]


def panel(i: int, p: Panel) -> dict[str, Any]:
    title, kind, targets, unit = p
    return {
        "id": i + 1,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12 if kind == "timeseries" else 6, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for j, (expr, legend) in enumerate(targets)
        ],
    }


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    x = y = row_h = 0
    for p in panels:
        w = p["gridPos"]["w"]
        if x + w > 24:
            x, y = 0, y + row_h
        p["gridPos"].update(x=x, y=y)
        x, row_h = x + w, max(row_h if x else 0, p["gridPos"]["h"])
    return panels


def dashboard(uid: str, title: str, panels: list[Panel], templating: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["aftersales"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": []},
        "links": [
            {
                "title": "Runbook",
                "url": "https://github.com/aftersales/platform/blob/main/docs/operations.md",
                "type": "link",
            }
        ],
        "panels": layout([panel(i, p) for i, p in enumerate(panels)]),
    }


GRID_VARIABLE = {
    "name": "grid",
    "label": "Grid",
    "type": "query",
    "datasource": DATASOURCE,
    "query": {"query": "label_values(aftersales_kpi_backlog_tickets, grid)", "refId": "grid"},
    "definition": "label_values(aftersales_kpi_backlog_tickets, grid)",
    "includeAll": True,
    "multi": True,
    "allValue": ".*",
    "current": {"text": "All", "value": "$__all"},
    "refresh": 2,
}

# The grids that had on-site work (a grid appears here with its first checked-out visit).
FIELD_GRID = {
    **GRID_VARIABLE,
    "query": {"query": "label_values(aftersales_kpi_field_visits_total, grid)", "refId": "grid"},
    "definition": "label_values(aftersales_kpi_field_visits_total, grid)",
}


def main() -> None:
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for name, board in {
        "operations-overview": dashboard(
            "aftersales-ops", "After-sales: operations overview", OPERATIONS, []
        ),
        "service-health": dashboard("aftersales-health", "After-sales: service health", HEALTH, []),
        "grid-performance": dashboard(
            "aftersales-grids", "After-sales: grid performance", GRID, [GRID_VARIABLE]
        ),
        "field-service": dashboard(
            "aftersales-field",
            "After-sales: on-site work (first-time fix, visits, parts)",
            FIELD,
            [FIELD_GRID],
        ),
    }.items():
        (out / f"{name}.json").write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
