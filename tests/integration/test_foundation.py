"""Foundation guarantees on the real Kafka broker and MongoDB-wire server, with a real service process."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from harness import (
    ROOT,
    Infra,
    ServiceProcess,
    data_of,
    free_port,
    headers_of,
    mongo,
    produce,
    read_to_end,
    read_topic,
    service_env,
    unique,
    wait_until,
)

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import new_event
from aftersales.shared.kafka import make_broker, publish_event
from aftersales.shared.settings import ServiceSettings

PROBE = [sys.executable, str(ROOT / "tests" / "integration" / "probe_service.py")]


def probe(
    infra: Infra, prefix: str, database: str, processes: list[ServiceProcess], **extra: str
) -> ServiceProcess:
    port = free_port()
    proc = ServiceProcess(
        "probe", PROBE, service_env(infra, prefix=prefix, database=database, port=port, **extra), port
    ).start()
    processes.append(proc)
    return proc


async def tally(infra: Infra, database: str, note_id: str) -> dict[str, int] | None:
    client = mongo(infra)
    try:
        return await client[database]["tallies"].find_one({"_id": note_id})
    finally:
        await client.close()


async def test_published_event_is_a_cloudevent_the_sdk_reads(infra: Infra) -> None:
    settings = ServiceSettings(
        service_name="sdk-check", kafka_bootstrap_servers=infra.kafka, kafka_topic_prefix=unique("t")
    )
    topic = settings.topic(Topic.TICKETS)
    event = new_event(
        TicketCancelled(ticket_id="T-1", reason="duplicate", cancelled_at=datetime.now(UTC)),
        source="/aftersales/intake",
        subject="T-1",
    )
    broker = make_broker(settings)
    await broker.start()
    try:
        await publish_event(broker, topic, event)
    finally:
        await broker.stop()

    [record] = await read_topic(infra, topic, expect=1)
    parsed = from_binary_event(KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value))
    assert parsed.get_id() == event.id
    assert parsed.get_type() == "aftersales.ticket.cancelled.v1"
    assert parsed.get_source() == "/aftersales/intake"
    assert parsed.get_subject() == "T-1"
    assert parsed.get_data() == event.data
    assert record.key == b"T-1"


async def test_service_producers_wait_for_all_in_sync_replicas_and_are_idempotent(infra: Infra) -> None:
    """`make_broker` is every service's producer; this reads what its Kafka client really runs with."""
    broker = make_broker(ServiceSettings(service_name="acks-check", kafka_bootstrap_servers=infra.kafka))
    await broker.start()
    try:
        client = broker.config.producer._producer.producer  # the aiokafka producer every publish uses
        assert client._sender._acks == -1  # acks=all: the leader waits for every in-sync replica
        assert client._txn_manager is not None  # idempotent: a retried send is not written twice
    finally:
        await broker.stop()


async def test_outbox_survives_kill_before_publish_and_consumer_applies_once(infra: Infra, processes) -> None:
    prefix, database = unique("t"), unique("probe_")
    topic = f"{prefix}{Topic.TICKETS}"
    crashing = probe(infra, prefix, database, processes, CRASH_POINT="before_publish")
    await crashing.wait_ready()
    async with httpx.AsyncClient() as client:
        created = (await client.post(f"{crashing.url}/notes", json={"note_id": "N-1"})).json()
    # The relay picks the event up and the process SIGKILLs itself before the broker has it.
    assert crashing.wait_exit(timeout_s=30) == -9
    client = mongo(infra)
    try:
        note = await client[database]["notes"].find_one({"_id": "N-1"})
    finally:
        await client.close()
    assert note is not None and [e["id"] for e in note["outbox"]] == [created["event_id"]]
    assert await read_to_end(infra, topic) == []  # the only producer is dead: the topic is final

    restarted = probe(infra, prefix, database, processes)
    await restarted.wait_ready()
    [record] = await read_topic(infra, topic, expect=1, timeout_s=30)
    assert headers_of(record)["ce_id"] == created["event_id"]
    await wait_until("the event applied", lambda: tally(infra, database, "N-1"))

    # Deliver the very same event a second time, then a marker on the same partition (same key):
    # once the marker is applied, the duplicate has been handled before it, and must not count twice.
    await produce(infra, topic, record.value, key=record.key, headers=headers_of(record))
    marker = new_event(
        TicketCancelled(ticket_id="N-1", reason="marker", cancelled_at=datetime.now(UTC)),
        source="/test",
        subject="N-1",
    )
    await produce(infra, topic, marker.value(), key=marker.key, headers=marker.headers())

    async def applied_marker() -> dict[str, int] | None:
        doc = await tally(infra, database, "N-1")
        return doc if doc and marker.id in doc.get("applied_events", []) else None

    doc = await wait_until("duplicate and marker handled", applied_marker)
    assert doc["deliveries"] == 3  # original, duplicate, marker all reached the handler
    assert doc["applied"] == 2  # the duplicate changed nothing


@pytest.mark.expect_dlq("tickets: a message whose handler always fails, and a non-CloudEvent")
async def test_poison_message_goes_to_dlq_and_partition_moves_on(infra: Infra, processes) -> None:
    prefix, database = unique("t"), unique("probe_")
    topic = f"{prefix}{Topic.TICKETS}"
    service = probe(infra, prefix, database, processes, CONSUMER_MAX_ATTEMPTS="3")
    await service.wait_ready()
    async with httpx.AsyncClient() as client:
        poison = (
            await client.post(f"{service.url}/notes", json={"note_id": "P-1", "reason": "poison"})
        ).json()
    # Not even a CloudEvent: parked at once with the reason, without retries.
    await produce(infra, topic, b"{not json", key=b"P-1", headers={"content-type": "application/json"})
    # The next message on the same partition (same key) must still be processed.
    good = new_event(
        TicketCancelled(ticket_id="P-1", reason="after-poison", cancelled_at=datetime.now(UTC)),
        source="/test",
        subject="P-1",
    )
    await produce(infra, topic, good.value(), key=good.key, headers=good.headers())

    dlq = await read_topic(infra, f"{topic}.dlq", expect=2, timeout_s=30)
    by_kind = {headers_of(r)["dlq_kind"]: headers_of(r) for r in dlq}
    failed = by_kind["retries_exhausted"]
    assert failed["ce_id"] == poison["event_id"]
    assert failed["dlq_attempts"] == "3"
    assert "always fails" in failed["dlq_reason"]
    assert failed["dlq_original_topic"] == topic
    assert "missing header" in by_kind["poison"]["dlq_reason"]
    [parked] = [r for r in dlq if headers_of(r)["dlq_kind"] == "retries_exhausted"]
    assert data_of(parked)["ticket_id"] == "P-1"  # the original value is kept for replay
    assert parked.key == b"P-1"

    doc = await wait_until("message after the poison applied", lambda: _applied(infra, database, "P-1"))
    assert doc["applied"] == 1  # only the good one; the poison message was never applied
    assert doc["deliveries"] == 4  # 3 attempts at the poison message, 1 for the good one


async def _applied(infra: Infra, database: str, note_id: str) -> dict[str, int] | None:
    doc = await tally(infra, database, note_id)
    return doc if doc and doc.get("applied") else None


async def test_consumer_killed_before_commit_sees_message_again_and_applies_once(
    infra: Infra, processes
) -> None:
    prefix, database = unique("t"), unique("probe_")
    crashing = probe(infra, prefix, database, processes, CRASH_POINT="after_apply")
    await crashing.wait_ready()
    async with httpx.AsyncClient() as client:
        await client.post(f"{crashing.url}/notes", json={"note_id": "R-1", "reason": "crash"})
    assert crashing.wait_exit(timeout_s=30) == -9
    doc = await tally(infra, database, "R-1")
    assert doc is not None and doc["applied"] == 1 and doc["deliveries"] == 1

    restarted = probe(infra, prefix, database, processes)
    await restarted.wait_ready()

    async def redelivered() -> dict[str, int] | None:
        doc = await tally(infra, database, "R-1")
        return doc if doc and doc["deliveries"] >= 2 else None

    doc = await wait_until("the uncommitted message delivered again", redelivered)
    assert doc["applied"] == 1


def test_unreachable_kafka_gives_one_clear_line_and_nonzero_exit(infra: Infra) -> None:
    env = service_env(
        infra,
        prefix="x",
        database="unused",
        port=free_port(),
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        KAFKA_CONNECT_TIMEOUT_S="3",
    )
    result = subprocess.run(PROBE, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot reach Kafka" in lines[0] and "KAFKA_BOOTSTRAP_SERVERS" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_unreachable_mongodb_gives_one_clear_line_and_nonzero_exit(infra: Infra) -> None:
    env = service_env(
        infra,
        prefix="x",
        database="unused",
        port=free_port(),
        MONGODB_URI=f"mongodb://user:secret@127.0.0.1:{free_port()}/",
        MONGODB_CONNECT_TIMEOUT_S="2",
    )
    result = subprocess.run(PROBE, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot reach MongoDB" in lines[0] and "secret" not in lines[0]


def test_invalid_configuration_names_the_variable(infra: Infra) -> None:
    env = service_env(infra, prefix="x", database="unused", port=free_port(), KAFKA_PARTITIONS="zero")
    result = subprocess.run(PROBE, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "kafka_partitions" in result.stderr
    assert "Traceback" not in result.stderr
