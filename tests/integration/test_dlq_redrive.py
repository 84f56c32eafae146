"""The order-preserving DLQ redrive, with intake as a real process: a parked assignment event put back
after newer ones goes on the ticket's timeline without moving its status backwards, and each parked
message is redriven once; and the operator's command (`python -m aftersales.shared.dlq list|show|redrive`)
puts messages parked out of order back in their original order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from harness import Platform, auth, wait_until
from test_intake import ticket_body
from topics import headers_of as headers_of_record
from topics import read_topic

from aftersales.shared.contracts import Topic, dead_letter_topic
from aftersales.shared.contracts.events import (
    TicketCancelled,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderResolved,
)
from aftersales.shared.dlq import list_dlqs, redrive
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.kafka import ensure_topics
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


@pytest.mark.expect_dlq("the test parks messages in a DLQ itself, out of their order, then redrives them")
async def test_the_cli_lists_shows_and_redrives_parked_messages_in_their_original_order(
    platform: Platform,
) -> None:
    """Parked out of order (a later event of the ticket parked first, as two consumer groups or a
    redelivery can), the messages go back sorted by their original partition and offset, through the
    command an operator runs; a second redrive finds nothing."""
    settings = ServiceSettings(
        service_name="test", kafka_bootstrap_servers=platform.infra.kafka, kafka_topic_prefix=platform.prefix
    )
    await ensure_topics(settings, [Topic.TICKETS])
    topic = settings.topic(Topic.TICKETS)
    dlq = dead_letter_topic(topic)
    tid = "T-redrive-order"
    originals = [(0, 12, "third"), (0, 10, "first"), (1, 4, "fourth"), (0, 11, "second")]  # as parked
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for partition, offset, reason in originals:
            cancelled = TicketCancelled(ticket_id=tid, reason=reason, cancelled_at=datetime.now(UTC))
            event = new_event(cancelled, source="/aftersales/intake", subject=tid)
            parked_headers = headers_of(
                event,
                dlq_reason="handler failed",
                dlq_kind="retries_exhausted",
                dlq_error_type="ValueError",
                dlq_attempts="4",
                dlq_original_topic=topic,
                dlq_original_partition=str(partition),
                dlq_original_offset=str(offset),
            )
            await producer.send_and_wait(dlq, event.value(), key=event.key, headers=parked_headers)
    finally:
        await producer.stop()

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": platform.infra.kafka,
        "KAFKA_TOPIC_PREFIX": platform.prefix,
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "aftersales.shared.dlq", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert f"{dlq}\t4\tretries_exhausted: ValueError x4" in cli("list").splitlines()
    shown = [line for line in cli("show", Topic.TICKETS).splitlines() if "<-" in line]
    assert [line.split("<- ")[1].split()[0] for line in shown] == [
        f"{topic}:{p}:{o}" for p, o, _ in originals
    ]
    assert cli("redrive", Topic.TICKETS, "--dry-run").strip() == "would redrive: 4"
    assert cli("redrive", Topic.TICKETS).strip() == "redriven: 4"
    assert cli("redrive", Topic.TICKETS).strip() == "redriven: 0"

    back = await read_topic(
        platform.infra, topic, expect=4, where=lambda r: "redriven_from" in headers_of_record(r)
    )
    reasons = [json.loads(r.value or b"{}")["reason"] for r in back]
    assert reasons == ["first", "second", "third", "fourth"]  # original partition and offset order
