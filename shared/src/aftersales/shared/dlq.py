"""Dead-letter topics: see what is parked, and put it back in order.

    python -m aftersales.shared.dlq list                 every <topic>.dlq with its depth and reasons
    python -m aftersales.shared.dlq show TOPIC [-n N]    the parked messages of one DLQ (TOPIC or TOPIC.dlq)
    python -m aftersales.shared.dlq redrive TOPIC        publish them again to TOPIC, in their original order

Kafka connection and topic prefix come from the usual settings (KAFKA_BOOTSTRAP_SERVERS,
KAFKA_TOPIC_PREFIX). `redrive` reads the DLQ with its own consumer group (`aftersales-dlq-redrive`), so
each parked message is redriven once: it publishes every message not redriven yet, sorted by original
partition and offset (one ticket's events stay in their original order), with the original key, value and
CloudEvents headers (its `ce_id` too, so a consumer that had applied it after all finds a duplicate),
waits for every acknowledgement, and only then commits. Consumers guard their read models by round and
time, so a redriven event that is older than what they show does not move a status backwards.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from aftersales.shared.contracts import dead_letter_topic
from aftersales.shared.settings import ServiceSettings

REDRIVE_GROUP = "aftersales-dlq-redrive"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class Parked:
    dlq_offset: int
    dlq_partition: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    @property
    def original(self) -> tuple[str, int, int]:
        h = self.headers
        return (
            h.get("dlq_original_topic", b"").decode(),
            int(h.get("dlq_original_partition", b"-1")),
            int(h.get("dlq_original_offset", b"-1")),
        )

    def text(self, name: str) -> str:
        return self.headers.get(name, b"").decode(errors="replace")


async def read_parked(
    bootstrap: str, dlq: str, *, group: str | None
) -> tuple[list[Parked], AIOKafkaConsumer]:
    """Read every message of `dlq` after the group's committed offsets (all of it without a group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    partitions = [TopicPartition(dlq, p) for p in sorted(consumer.partitions_for_topic(dlq) or [])]
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(dlq, p) for p in sorted(consumer.partitions_for_topic(dlq) or [])]
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions) if partitions else {}
    out: list[Parked] = []
    for tp in partitions:
        committed = await consumer.committed(tp) if group else None
        if committed is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)

    async def behind() -> bool:
        return any([await consumer.position(tp) < ends[tp] for tp in partitions])

    while await behind():
        batch = await consumer.getmany(*partitions, timeout_ms=1000)
        for records in batch.values():
            for r in records:
                headers = {k: v for k, v in (r.headers or ())}
                out.append(Parked(r.offset, r.partition, r.key, r.value, headers))
    return out, consumer


async def dead_letter_topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(n for n in names if n.endswith(DLQ_SUFFIX) and n.startswith(prefix))


async def list_dlqs(settings: ServiceSettings) -> list[tuple[str, int, Counter[str]]]:
    out = []
    for dlq in await dead_letter_topics(settings.kafka_bootstrap_servers, settings.kafka_topic_prefix):
        parked, consumer = await read_parked(settings.kafka_bootstrap_servers, dlq, group=None)
        await consumer.stop()
        out.append(
            (dlq, len(parked), Counter(f"{p.text('dlq_kind')}: {p.text('dlq_error_type')}" for p in parked))
        )
    return out


async def redrive(settings: ServiceSettings, topic: str, *, dry_run: bool = False) -> int:
    """Publish the DLQ's messages not redriven yet back to their topic, in order; return how many."""
    dlq = _dlq_name(settings, topic)
    group = settings.topic(REDRIVE_GROUP)  # per environment, like every consumer group
    parked, consumer = await read_parked(settings.kafka_bootstrap_servers, dlq, group=group)
    try:
        ordered = sorted(parked, key=lambda p: p.original)
        if dry_run or not ordered:
            return len(ordered)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for p in ordered:  # one at a time: a ticket's events must keep their order
                target = p.original[0] or dlq.removesuffix(DLQ_SUFFIX)
                headers = [(k, v) for k, v in p.headers.items() if not k.startswith("dlq_")]
                headers.append(("redriven_from", f"{dlq}:{p.dlq_partition}:{p.dlq_offset}".encode()))
                await producer.send_and_wait(target, p.value, key=p.key, headers=headers)
        finally:
            await producer.stop()
        last: dict[TopicPartition, int] = {}
        for p in parked:
            tp = TopicPartition(dlq, p.dlq_partition)
            last[tp] = max(last.get(tp, -1), p.dlq_offset)
        await consumer.commit({tp: offset + 1 for tp, offset in last.items()})
        return len(ordered)
    finally:
        await consumer.stop()


def _dlq_name(settings: ServiceSettings, topic: str) -> str:
    name = topic if topic.startswith(settings.kafka_topic_prefix) else settings.topic(topic)
    return name if name.endswith(DLQ_SUFFIX) else dead_letter_topic(name)


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aftersales.shared.dlq", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every DLQ with its depth and reasons")
    show = sub.add_parser("show", help="the parked messages of one DLQ")
    show.add_argument("topic")
    show.add_argument("-n", "--limit", type=int, default=20)
    again = sub.add_parser("redrive", help="publish parked messages again, in their original order")
    again.add_argument("topic")
    again.add_argument("--dry-run", action="store_true", help="only count what would be redriven")
    args = parser.parse_args(argv)
    settings = ServiceSettings(service_name="dlq")
    if args.command == "list":
        for dlq, depth, reasons in await list_dlqs(settings):
            print(f"{dlq}\t{depth}\t" + "; ".join(f"{r} x{n}" for r, n in reasons.most_common()))
    elif args.command == "show":
        dlq = _dlq_name(settings, args.topic)
        parked, consumer = await read_parked(settings.kafka_bootstrap_servers, dlq, group=None)
        await consumer.stop()
        for p in parked[: args.limit]:
            topic, partition, offset = p.original
            print(
                f"{dlq}:{p.dlq_partition}:{p.dlq_offset} <- {topic}:{partition}:{offset} {p.text('ce_type')}"
            )
            print(f"  {p.text('dlq_kind')} after {p.text('dlq_attempts')} attempts: {p.text('dlq_reason')}")
    else:
        count = await redrive(settings, args.topic, dry_run=args.dry_run)
        print(f"{'would redrive' if args.dry_run else 'redriven'}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
