"""The order-preserving DLQ redrive, with intake as a real process: a parked assignment event put back
after newer ones goes on the ticket's timeline without moving its status backwards, and each parked
message is redriven once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from harness import Platform, auth, wait_until
from test_intake import ticket_body

from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.contracts.events import WorkOrderAccepted, WorkOrderAssigned, WorkOrderResolved
from aftersales.shared.dlq import list_dlqs, redrive
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.settings import ServiceSettings

ROUTING = "/aftersales/routing"


def headers_of(event: CloudEvent, **extra: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in {**event.headers(), **extra}.items()]


@pytest.mark.expect_dlq("assignments: the test parks an accepted event in the DLQ itself, then redrives it")
async def test_a_redriven_event_older_than_the_status_goes_on_the_timeline_only(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    topic = platform.topic(Topic.ASSIGNMENTS)
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
            created = await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
            tid = created.json()["id"]
            t0 = datetime.now(UTC)
            work = {"ticket_id": tid, "grid_id": "G-1", "round": 1}
            assigned = WorkOrderAssigned(
                **work, occurred_at=t0, technician_id="tech-1", tier=1, via="direct",
                priority="P3", category="hardware_fault",
            )  # fmt: skip
            accepted = WorkOrderAccepted(
                **work, occurred_at=t0 + timedelta(seconds=1), technician_id="tech-1"
            )
            resolved = WorkOrderResolved(
                **work, occurred_at=t0 + timedelta(seconds=2), technician_id="tech-1",
                resolution_code="fixed", priority="P3", category="hardware_fault",
            )  # fmt: skip
            events = [new_event(m, source=ROUTING, subject=tid) for m in (assigned, accepted, resolved)]
            # `accepted` was parked (say the database was down and an old runtime gave up on it); the
            # others went through.
            for event in (events[0], events[2]):
                await producer.send_and_wait(topic, event.value(), key=event.key, headers=headers_of(event))
            parked = events[1]
            await producer.send_and_wait(
                dead_letter_topic(topic),
                parked.value(),
                key=parked.key,
                headers=headers_of(
                    parked,
                    dlq_reason="database unavailable",
                    dlq_kind="retries_exhausted",
                    dlq_error_type="ServerSelectionTimeoutError",
                    dlq_original_topic=topic,
                    dlq_original_partition="0",
                    dlq_original_offset="1",
                ),
            )

            async def ticket() -> dict[str, Any]:
                return (await client.get(f"/v1/tickets/{tid}", headers=auth())).json()

            async def resolved_now() -> dict[str, Any] | None:
                doc = await ticket()
                return doc if doc["status"] == "resolved" else None

            await wait_until("the ticket resolved", resolved_now)
            settings = ServiceSettings(
                service_name="test",
                kafka_bootstrap_servers=platform.infra.kafka,
                kafka_topic_prefix=platform.prefix,
            )
            listed = {dlq: depth for dlq, depth, _ in await list_dlqs(settings)}
            assert listed[dead_letter_topic(topic)] == 1
            assert await redrive(settings, Topic.ASSIGNMENTS) == 1

            async def on_timeline() -> dict[str, Any] | None:
                doc = await ticket()
                return doc if any(e.get("event_id") == parked.id for e in doc["timeline"]) else None

            doc = await wait_until("the redriven event on the timeline", on_timeline)
            assert doc["status"] == "resolved"  # not moved back to in_progress by the older event
            assert await redrive(settings, Topic.ASSIGNMENTS) == 0  # each parked message goes back once
    finally:
        await producer.stop()
