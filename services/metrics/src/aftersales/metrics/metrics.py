"""The metrics service's Prometheus series: the business KPIs derived from its own rollups, Kafka consumer
lag and dead-letter depth, exported from a snapshot (`exporter` refreshes it; a scrape only reads it).

The business series carry the `aftersales_kpi_` prefix to stay distinct from what the producing services
export themselves; Grafana dashboards and alert rules depend on these names and labels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from aftersales.metrics.rollups import DURATION_BUCKETS_S
from aftersales.shared.contracts.common import Priority

Family = GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily


@dataclass
class Snapshot:
    alltime: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)
    waiting_customer: dict[str, int] = field(default_factory=dict)
    complaints_open: int = 0
    complaints_overdue: int = 0
    followups_pending: int = 0
    followups_overdue: int = 0
    csat: dict[str, tuple[int, int]] = field(default_factory=dict)  # grid -> (sum, count)
    lag: dict[tuple[str, str], int] = field(default_factory=dict)
    dlq_depth: dict[str, int] = field(default_factory=dict)
    refreshed_at: float = 0.0


# name, help, labels, the `alltime` rollup series it reads
_COUNTERS = (
    (
        "aftersales_kpi_tickets_created",
        "Tickets created, from the KPI store",
        ["channel", "category", "priority"],
        "created",
    ),
    (
        "aftersales_kpi_tickets_resolved",
        "Tickets resolved (first resolution)",
        ["category", "priority"],
        "resolved",
    ),
    (
        "aftersales_kpi_sla_breaches",
        "SLA clocks breached, by clock and grid",
        ["clock", "grid"],
        "sla_breaches",
    ),
    (
        "aftersales_kpi_csat_responses",
        "Survey answers by grid and CSAT score (1-5)",
        ["grid", "score"],
        "csat",
    ),
    ("aftersales_kpi_nps_responses", "NPS answers by grid and group", ["grid", "group"], "nps"),
    ("aftersales_kpi_complaints_opened", "Complaints opened, by scope", ["scope"], "complaints_opened"),
    (
        "aftersales_kpi_followups_completed",
        "Follow-up visits completed, by kind and outcome",
        ["kind", "outcome"],
        "followups_completed",
    ),
    ("aftersales_kpi_field_visits", "On-site visits checked out, by grid", ["grid"], "field_visits"),
    (
        "aftersales_kpi_field_resolutions",
        "Resolved tickets with an on-site visit, by grid and fix (first_time: exactly one visit, or repeat)",
        ["grid", "fix"],
        "field_resolutions",
    ),
    (
        "aftersales_kpi_field_appointments",
        "Appointments concluded, by grid and outcome (kept, no_show_customer, no_show_technician)",
        ["grid", "outcome"],
        "field_appointments",
    ),
    (
        "aftersales_kpi_field_parts_costed_resolutions",
        "Resolutions with an on-site visit whose every part line has a unit cost, by grid",
        ["grid"],
        "field_parts_costed",
    ),
    (
        "aftersales_kpi_parts_consumed",
        "Spare parts taken from stock for service reports (less those given back), by the stock's grid",
        ["grid"],
        "parts_consumed",
    ),
    (
        "aftersales_kpi_stock_low",
        "Low-stock alerts of the stock locations, by grid (a van's: unknown)",
        ["grid"],
        "stock_low",
    ),
)
# name, help, label, the `alltime` rollup series it reads
_HISTOGRAMS = (
    (
        "assignment_latency",
        "Time from ticket creation to the first assignment",
        "priority",
        "assignment_latency",
    ),
    (
        "first_response",
        "Time from creation to the technician's acceptance, customer waits excluded",
        "priority",
        "first_response",
    ),
    ("resolution", "Time from creation to the first resolution", "priority", "resolution"),
    (
        "field_travel",
        "Travel time to an on-site visit, departure to check-in, by grid",
        "grid",
        "field_travel",
    ),
    ("field_work", "Time on site, check-in to check-out, by grid", "grid", "field_work"),
)


class KpiCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Family]:
        s = self.snapshot
        for name, doc, labels, series in _COUNTERS:
            yield from _counter(name, doc, labels, s.alltime.get(series, {}))
        for name, doc, label, series in _HISTOGRAMS:
            yield _histogram(f"aftersales_kpi_{name}_seconds", doc, label, s.alltime.get(series, {}))
        yield _parts_cost(s.alltime.get("field_parts_cost_cents", {}))
        yield from _backlog_gauges(s)
        yield from _platform_gauges(s)


def _labelled(name: str, doc: str, labels: list[str], values: Mapping[Any, float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        gauge.add_metric(list(key), n)
    return gauge


def _backlog_gauges(s: Snapshot) -> Iterator[GaugeMetricFamily]:
    yield _labelled(
        "aftersales_kpi_backlog_tickets",
        "Open tickets by grid",
        ["grid"],
        {(g,): n for g, n in s.backlog.items()},
    )
    yield _labelled(
        "aftersales_kpi_waiting_customer_tickets",
        "Open tickets waiting on the customer",
        ["grid"],
        {(g,): n for g, n in s.waiting_customer.items()},
    )
    csat = GaugeMetricFamily("aftersales_kpi_csat_average", "Average CSAT (1-5) by grid", labels=["grid"])
    for grid, (total, count) in sorted(s.csat.items()):
        if count:
            csat.add_metric([grid], total / count)
    yield csat
    yield GaugeMetricFamily("aftersales_kpi_complaints_open", "Open complaints", value=s.complaints_open)
    yield GaugeMetricFamily(
        "aftersales_kpi_complaints_overdue",
        "Open complaints past their deadline",
        value=s.complaints_overdue,
    )
    yield GaugeMetricFamily(
        "aftersales_kpi_followups_pending", "Scheduled follow-ups not yet done", value=s.followups_pending
    )
    yield GaugeMetricFamily(
        "aftersales_kpi_followups_overdue", "Follow-ups past their due time", value=s.followups_overdue
    )


def _platform_gauges(s: Snapshot) -> Iterator[GaugeMetricFamily]:
    yield _labelled(
        "aftersales_consumer_lag",
        "Messages not yet consumed: end offset minus committed offset",
        ["group", "topic"],
        s.lag,
    )
    yield _labelled(
        "aftersales_dlq_depth_messages",
        "Messages in each dead-letter topic (end offsets)",
        ["topic"],
        {(t,): n for t, n in s.dlq_depth.items()},
    )
    yield GaugeMetricFamily(
        "aftersales_kpi_snapshot_timestamp_seconds",
        "When the KPI snapshot was last refreshed",
        value=s.refreshed_at,
    )


def _counter(
    name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], int]
) -> Iterable[CounterMetricFamily]:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        if len(key) == len(labels):
            family.add_metric(list(key), value)
    yield family


def _histogram(name: str, doc: str, label: str, raw: dict[tuple[str, ...], int]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    # Every priority is exported from the start, at zero until observed: a series that first appears
    # with its counts already up shows no increase() in Prometheus, and its quantiles would be NaN.
    # (Grids are not known ahead: a grid's series appears with its first observation.)
    known = {p.value for p in Priority} if label == "priority" else set()
    for value in sorted(known | {k[0] for k in raw}):
        cumulative, buckets = 0, []
        for bound in [*(str(b) for b in DURATION_BUCKETS_S), "inf"]:
            cumulative += raw.get((value, "le", bound), 0)
            buckets.append(("+Inf" if bound == "inf" else f"{float(bound)}", cumulative))
        family.add_metric([value], buckets=buckets, sum_value=raw.get((value, "sum_ms"), 0) / 1000)
    return family


def _parts_cost(raw: dict[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "aftersales_kpi_field_parts_cost",
        "Cost of the parts used on resolutions with an on-site visit (currency units, e.g. yuan), by grid; "
        "only resolutions whose every part line has a unit cost",
        labels=["grid"],
    )
    for (grid, *_), cents in sorted(raw.items()):
        family.add_metric([grid], cents / 100)
    return family


COLLECTOR = KpiCollector()


def register() -> KpiCollector:
    with contextlib.suppress(ValueError):  # already registered (build() called twice in one process)
        REGISTRY.register(COLLECTOR)
    return COLLECTOR
