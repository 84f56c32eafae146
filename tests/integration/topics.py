"""Reading and writing the suite's Kafka topics: reads that wait with a deadline and fail naming what
they saw, reads of everything a topic holds, and single produces that wait for the broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

if TYPE_CHECKING:
    from harness import Infra

__all__ = [
    "ALL",
    "Record",
    "data_of",
    "describe",
    "headers_of",
    "produce",
    "read_to_end",
    "read_topic",
    "topic_partitions",
]

# `expect` at or above ALL reads what the topic holds now (to its end offsets), however many records.
ALL = 10**6

Record = ConsumerRecord[bytes, bytes]


async def read_topic(
    infra: Infra,
    topic: str,
    *,
    expect: int,
    timeout_s: float = 30.0,
    where: Callable[[Record], bool] | None = None,
    settle_s: float = 0.0,
    distinct: bool = False,
) -> list[Record]:
    """Read `topic` from the beginning until `expect` matching records arrived (then `settle_s` more).

    Fails, naming what it saw, when they do not arrive within `timeout_s`: a short read is never
    returned as if it were the answer. `distinct` counts one record per `ce_id` (the outbox may publish
    an event twice; consumers dedupe). With `expect >= ALL`, see `read_to_end`.
    """
    if expect >= ALL:
        return await read_to_end(infra, topic, where=where, timeout_s=timeout_s, distinct=distinct)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infra.kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[Record] = []
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(_keep(records, where, seen if distinct else None))
            if len(out) >= expect:
                if settle_until is None:
                    settle_until = time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    return out
    finally:
        await consumer.stop()
    raise AssertionError(
        f"timed out after {timeout_s}s waiting for {expect} records on {topic}; got {len(out)}: "
        f"{describe(out)}"
    )


async def read_to_end(
    infra: Infra,
    topic: str,
    *,
    where: Callable[[Record], bool] | None = None,
    timeout_s: float = 30.0,
    distinct: bool = False,
) -> list[Record]:
    """Read every record `topic` holds now, up to the end offsets taken at the call (none if it does not
    exist). Exact once whatever writes the topic has stopped, so absence checks need no time window."""
    out: list[Record] = []
    seen: set[str] = set()
    tps = await topic_partitions(infra.kafka, lambda name: name == topic)
    if not tps:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.kafka, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            if time.monotonic() >= deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout_s}s; got {len(out)}")
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for tp, records in batch.items():
                out.extend(
                    _keep([r for r in records if r.offset < end[tp]], where, seen if distinct else None)
                )
    finally:
        await consumer.stop()
    return out


async def topic_partitions(kafka: str, wanted: Callable[[str], bool]) -> list[TopicPartition]:
    """Return the partitions of the existing topics `wanted` accepts. Asks the admin API, which (unlike
    a consumer's metadata request, with the broker's auto-creation on) never creates a topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if wanted(t)]
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]


def _keep(
    records: list[Record], where: Callable[[Record], bool] | None, seen: set[str] | None
) -> list[Record]:
    kept = []
    for r in records:
        if where is not None and not where(r):
            continue
        if seen is not None:
            ce_id = headers_of(r).get("ce_id", f"{r.partition}:{r.offset}")
            if ce_id in seen:
                continue
            seen.add(ce_id)
        kept.append(r)
    return kept


def describe(records: list[Record], limit: int = 20) -> str:
    """Return a short account of records (type, key) for a failure message."""
    shown = [(headers_of(r).get("ce_type", "?"), (r.key or b"").decode(errors="replace")) for r in records]
    more = f" ... and {len(shown) - limit} more" if len(shown) > limit else ""
    return f"{shown[:limit]}{more}"


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or ()}


def data_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    value = json.loads(record.value or b"{}")
    assert isinstance(value, dict)
    return value


async def produce(
    infra: Infra,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    partition: int | None = None,
) -> RecordMetadata:
    """Produce one record and wait for the broker; return where it landed (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        return await producer.send_and_wait(
            topic,
            value,
            key=key,
            partition=partition,
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )
    finally:
        await producer.stop()
