"""Kafka handlers: every stream of the platform folds into the KPI store."""

from __future__ import annotations

import logging

from aftersales.metrics.facts import subject_of
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import subscribe
from aftersales.shared.runtime import ServiceRuntime

log = logging.getLogger("aftersales.metrics")

CONSUMED = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK)


def register(runtime: ServiceRuntime, store: MetricsStore) -> None:
    """Subscribe the KPI fold to every stream, with the shared bounded retry and dead-letter topic."""

    async def handle(event: CloudEvent) -> None:
        data = event.model()  # raises PoisonEvent (-> DLQ) for invalid data
        subject = subject_of(data)
        if not subject:
            return  # surge switches and other grid-level events carry no ticket facts
        await store.record(subject, event.id, data)

    subscribe(runtime.broker, runtime.settings, [t.value for t in CONSUMED], handle)
