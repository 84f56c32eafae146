"""The refresher of the Prometheus snapshot (`metrics.COLLECTOR`): the KPI store's figures, plus Kafka
consumer lag and dead-letter depth read from the cluster.

The business series come from the metrics service's own rollups (so they survive restarts and do not
depend on other services' internals). A background task refreshes the snapshot; a scrape only reads it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aftersales.metrics.metrics import COLLECTOR, Snapshot
from aftersales.metrics.service import Recording
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.kafkaauth import client_options
from aftersales.shared.settings import ServiceSettings

log = logging.getLogger("aftersales.metrics")

GROUP_PREFIX = "aftersales-"


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
    overdue = await store.overdue_counts()  # kept as deadlines move: reads by `_id`, no walk
    s.complaints_overdue, s.followups_overdue = overdue["complaints"], overdue["followups"]
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


async def refresh_snapshot(recording: Recording, settings: ServiceSettings) -> None:
    """Finish batches a crash left behind, then replace the snapshot the collector exports."""
    await recording.recover_batches()
    COLLECTOR.snapshot = await refresh(recording.store, settings)
