"""Kafka handlers: every stream of the platform folds into the KPI store, a whole batch at a time.

Metrics reads every event type of its streams, so the subscriber is the batch fold itself (one bulk apply
per poll, its throughput design) rather than a table of per-type handlers; the fold's own table of what
each type changes is in `fold`."""

from __future__ import annotations

from collections.abc import Sequence

from aftersales.metrics.service import Recording
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import Delivery, subscribe
from aftersales.shared.runtime import ServiceRuntime

CONSUMES = (Topic.TICKETS, Topic.ASSIGNMENTS, Topic.FOLLOWUPS, Topic.FEEDBACK, Topic.FIELDWORK)


def register(runtime: ServiceRuntime, recording: Recording) -> None:
    """Subscribe the KPI fold to every stream, with the shared bounded retry and dead-letter topic."""

    async def handle(event: CloudEvent) -> None:
        await recording.record([event])

    async def handle_batch(deliveries: Sequence[Delivery]) -> None:
        await recording.record([d.event for d in deliveries])

    subscribe(
        runtime.broker,
        runtime.settings,
        [t.value for t in CONSUMES],
        handle,
        batch_handler=handle_batch,
    )
