"""Kafka handlers: every stream of the platform folds into the KPI store, a whole batch at a time."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from aftersales.metrics.facts import subject_of
from aftersales.metrics.products import bounded_product
from aftersales.metrics.store import MetricsStore
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import Delivery, subscribe
from aftersales.shared.runtime import ServiceRuntime

log = logging.getLogger("aftersales.metrics")

CONSUMED = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK)


def register(runtime: ServiceRuntime, store: MetricsStore, products: Collection[str] = ()) -> None:
    """Subscribe the KPI fold to every stream, with the shared bounded retry and dead-letter topic."""

    async def handle(event: CloudEvent) -> None:
        await record([event])

    async def handle_batch(deliveries: Sequence[Delivery]) -> None:
        await record([d.event for d in deliveries])

    async def record(events: Sequence[CloudEvent]) -> None:
        items = []
        for event in events:
            data = event.model()  # PoisonEvent: the batch goes one by one, this event to the DLQ
            data = bounded_product(data, products)  # a channel's model names must not grow the rollups
            subject = subject_of(data)
            if subject:  # surge switches and other grid-level events carry no ticket facts
                items.append((subject, event.id, data))
        if items:
            await store.record_batch(items)

    subscribe(
        runtime.broker,
        runtime.settings,
        [t.value for t in CONSUMED],
        handle,
        batch_handler=handle_batch,
    )
