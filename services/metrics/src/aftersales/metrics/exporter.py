"""Prometheus series derived from the KPI store, plus Kafka consumer lag and dead-letter depth.

The business series come from the metrics service's own rollups (so they survive restarts and do not
depend on other services' internals); they carry the `aftersales_kpi_` prefix to stay distinct from
what the producing services export themselves. A background task refreshes a snapshot; a scrape only
reads that snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from aftersales.metrics.rollups import DURATION_BUCKETS_S
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.contracts.common import Priority
from aftersales.shared.kafkaauth import client_options
from aftersales.shared.settings import ServiceSettings

log = logging.getLogger("aftersales.metrics")

GROUP_PREFIX = "aftersales-"


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


class KpiCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        s = self.snapshot
        yield from _counter(
            "aftersales_kpi_tickets_created",
            "Tickets created, from the KPI store",
            ["channel", "category", "priority"],
            s.alltime.get("created", {}),
        )
        yield from _counter(
            "aftersales_kpi_tickets_resolved",
            "Tickets resolved (first resolution)",
            ["category", "priority"],
            s.alltime.get("resolved", {}),
        )
        yield from _counter(
            "aftersales_kpi_sla_breaches",
            "SLA clocks breached, by clock and grid",
            ["clock", "grid"],
            s.alltime.get("sla_breaches", {}),
        )
        yield from _counter(
            "aftersales_kpi_csat_responses",
            "Survey answers by grid and CSAT score (1-5)",
            ["grid", "score"],
            s.alltime.get("csat", {}),
        )
        yield from _counter(
            "aftersales_kpi_nps_responses",
            "NPS answers by grid and group",
            ["grid", "group"],
            s.alltime.get("nps", {}),
        )
        yield from _counter(
            "aftersales_kpi_complaints_opened",
            "Complaints opened, by scope",
            ["scope"],
            s.alltime.get("complaints_opened", {}),
        )
        yield from _counter(
            "aftersales_kpi_followups_completed",
            "Follow-up visits completed, by kind and outcome",
            ["kind", "outcome"],
            s.alltime.get("followups_completed", {}),
        )
        for name, doc in (
            ("assignment_latency", "Time from ticket creation to the first assignment"),
            ("first_response", "Time from creation to the technician's acceptance, customer waits excluded"),
            ("resolution", "Time from creation to the first resolution"),
        ):
            yield _histogram(f"aftersales_kpi_{name}_seconds", doc, s.alltime.get(name, {}))
        backlog = GaugeMetricFamily("aftersales_kpi_backlog_tickets", "Open tickets by grid", labels=["grid"])
        for grid, n in sorted(s.backlog.items()):
            backlog.add_metric([grid], n)
        yield backlog
        waiting = GaugeMetricFamily(
            "aftersales_kpi_waiting_customer_tickets", "Open tickets waiting on the customer", labels=["grid"]
        )
        for grid, n in sorted(s.waiting_customer.items()):
            waiting.add_metric([grid], n)
        yield waiting
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
        lag = GaugeMetricFamily(
            "aftersales_consumer_lag",
            "Messages not yet consumed: end offset minus committed offset",
            labels=["group", "topic"],
        )
        for (group, topic), n in sorted(s.lag.items()):
            lag.add_metric([group, topic], n)
        yield lag
        dlq = GaugeMetricFamily(
            "aftersales_dlq_depth_messages",
            "Messages in each dead-letter topic (end offsets)",
            labels=["topic"],
        )
        for topic, n in sorted(s.dlq_depth.items()):
            dlq.add_metric([topic], n)
        yield dlq
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


def _histogram(name: str, doc: str, raw: dict[tuple[str, ...], int]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["priority"])
    # Every priority is exported from the start, at zero until observed: a series that first appears
    # with its counts already up shows no increase() in Prometheus, and its quantiles would be NaN.
    priorities = sorted({p.value for p in Priority} | {k[0] for k in raw})
    for priority in priorities:
        cumulative, buckets = 0, []
        for bound in [*(str(b) for b in DURATION_BUCKETS_S), "inf"]:
            cumulative += raw.get((priority, "le", bound), 0)
            buckets.append(("+Inf" if bound == "inf" else f"{float(bound)}", cumulative))
        family.add_metric([priority], buckets=buckets, sum_value=raw.get((priority, "sum_ms"), 0) / 1000)
    return family


COLLECTOR = KpiCollector()


def register() -> KpiCollector:
    with contextlib.suppress(ValueError):  # already registered (build() called twice in one process)
        REGISTRY.register(COLLECTOR)
    return COLLECTOR


async def refresh(store: MetricsStore, settings: ServiceSettings) -> Snapshot:
    """Return a fresh snapshot of the store (and of Kafka lag, when Kafka answers)."""
    s = Snapshot()
    s.alltime = await store.alltime()
    for grid, counters in (await store.current("grid")).items():
        s.backlog[grid] = counters.get("open", 0)
        s.waiting_customer[grid] = counters.get("waiting_customer", 0)
    everything = (await store.current("all")).get("all", {})
    s.complaints_open = everything.get("open_complaints", 0)
    s.followups_pending = everything.get("pending_followups", 0)
    overdue = await store.overdue(datetime.now(UTC))
    s.complaints_overdue = len(overdue["complaints"])
    s.followups_overdue = len(overdue["followups"])
    for (grid, _score), n in s.alltime.get("csat", {}).items():
        total, count = s.csat.get(grid, (0, 0))
        s.csat[grid] = (total + int(_score) * n, count + n)
    try:
        s.lag, s.dlq_depth = await asyncio.wait_for(kafka_offsets(settings), timeout=10)
    except Exception as exc:
        log.warning("could not read consumer lag", extra={"error": repr(exc)[:200]})
        s.lag, s.dlq_depth = COLLECTOR.snapshot.lag, COLLECTOR.snapshot.dlq_depth
    s.refreshed_at = datetime.now(UTC).timestamp()
    return s


async def kafka_offsets(settings: ServiceSettings) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Return lag per (consumer group, logical topic) of every aftersales-* group, and DLQ depths."""
    physical = {settings.topic(t.value): t.value for t in Topic}
    security = client_options(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=5000, **security
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False, **security
    )
    await admin.start()
    await consumer.start()
    try:
        existing = set(await admin.list_topics())
        mine = settings.topic(GROUP_PREFIX)  # groups carry the topic prefix, labels do not
        groups = [g[0] for g in await admin.list_consumer_groups() if str(g[0]).startswith(mine)]
        committed: dict[tuple[str, str], dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            for tp, meta in offsets.items():
                if tp.topic in physical and meta.offset >= 0:
                    committed.setdefault((group, tp.topic), {})[tp] = meta.offset
        partitions: set[TopicPartition] = set()
        for topic in [*physical, *(dead_letter_topic(t) for t in physical)]:
            if topic in existing:
                for p in consumer.partitions_for_topic(topic) or await _partitions(consumer, topic):
                    partitions.add(TopicPartition(topic, p))
        ends = await consumer.end_offsets(list(partitions)) if partitions else {}
        lag: dict[tuple[str, str], int] = {}
        for (group, topic), offsets in committed.items():
            total = sum(max(ends.get(tp, 0) - off, 0) for tp, off in offsets.items())
            # partitions the group never committed count from the start
            for tp, end in ends.items():
                if tp.topic == topic and tp not in offsets:
                    total += end
            lag[(group.removeprefix(settings.kafka_topic_prefix), physical[topic])] = total
        dlq: dict[str, int] = {}
        for topic, logical in physical.items():
            dlq_topic = dead_letter_topic(topic)
            if dlq_topic in existing:
                dlq[logical] = sum(end for tp, end in ends.items() if tp.topic == dlq_topic)
        return lag, dlq
    finally:
        await consumer.stop()
        await admin.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def refresh_snapshot(store: MetricsStore, settings: ServiceSettings) -> None:
    """Finish batches a crash left behind, then replace the snapshot the collector exports."""
    await store.recover_batches()
    COLLECTOR.snapshot = await refresh(store, settings)
