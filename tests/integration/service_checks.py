"""After-test checks of the services a test ran: no Python traceback in their logs and no message parked
in their dead-letter topics, unless the test's marker names what it expects (`expect_tracebacks`,
`expect_dlq`). A green test then also means "nothing failed quietly on the side".

The processes are the harness's (`STARTED`): those running when the test began (a module's shared
stack) and those it started. Logs are read from where the test began; DLQ depths are compared with
their depths at that moment, so a shared stack's earlier tests do not count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from aiokafka import AIOKafkaConsumer
from harness import STARTED, Infra, ServiceProcess, headers_of, read_to_end, topic_partitions

TRACEBACK = "Traceback (most recent call last)"
OPT_OUTS = ("expect_dlq", "expect_tracebacks")


@dataclass
class Before:
    """What the services had written when the test began."""

    started: int  # len(STARTED)
    logs: dict[ServiceProcess, int] = field(default_factory=dict)  # log size of the processes then running
    dlq: dict[str, int] = field(default_factory=dict)  # DLQ topic -> records


def opt_outs(node: pytest.Item) -> set[str]:
    """Return the checks this test opts out of; every opt-out must say what it expects."""
    names = set()
    for mark in node.iter_markers():
        if mark.name in OPT_OUTS:
            if not (mark.args and isinstance(mark.args[0], str) and mark.args[0].strip()):
                pytest.fail(f"@pytest.mark.{mark.name} needs a reason naming what is expected", pytrace=False)
            names.add(mark.name)
    return names


async def before_test(check_dlq: bool) -> Before:
    live = [p for p in STARTED if p.running()]
    before = Before(len(STARTED), {p: p.log_size() for p in live})
    if check_dlq and live:
        before.dlq = await dlq_depths(live)
    return before


def processes_since(before: Before) -> list[ServiceProcess]:
    return [*before.logs, *STARTED[before.started :]]


def tracebacks(before: Before) -> list[str]:
    """Return one line per process that logged a Python traceback during the test."""
    found = []
    for proc in processes_since(before):
        text = proc.log_text(since=before.logs.get(proc))
        if TRACEBACK in text:
            lines = [line for line in text.splitlines() if TRACEBACK in line]
            found.append(
                f"{proc.name} logged {len(lines)} traceback(s) ({proc.log_path}); first: {lines[0][:600]}"
            )
    return found


async def parked(before: Before) -> list[str]:
    """Return one line per message parked in a DLQ of the test's services during the test."""
    procs = processes_since(before)
    grown = {
        topic: depth - before.dlq.get(topic, 0)
        for topic, depth in (await dlq_depths(procs)).items()
        if depth > before.dlq.get(topic, 0)
    }
    found = []
    for topic, new in sorted(grown.items()):
        kafka = next(p.env["KAFKA_BOOTSTRAP_SERVERS"] for p in procs if topic.startswith(p.topic_prefix))
        records = await read_to_end(Infra(kafka=kafka, mongodb_uri=""), topic)
        for r in sorted(records, key=lambda r: r.timestamp)[-new:]:
            h = headers_of(r)
            found.append(
                f"{topic}: {h.get('ce_type', 'not a CloudEvent')} parked by {h.get('dlq_consumer_group')} "
                f"({h.get('dlq_kind')}): {h.get('dlq_reason', '')[:300]}"
            )
    return found


async def dlq_depths(procs: Iterable[ServiceProcess]) -> dict[str, int]:
    """Return the record count of every DLQ topic under the processes' topic prefixes."""
    prefixes: dict[str, set[str]] = defaultdict(set)
    for p in procs:
        # a process on a TLS/SASL listener (tests/security) is not reachable with a plain client
        if p.topic_prefix and p.env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") == "PLAINTEXT":
            prefixes[p.env["KAFKA_BOOTSTRAP_SERVERS"]].add(p.topic_prefix)
    depths: dict[str, int] = defaultdict(int)
    for kafka, wanted in prefixes.items():
        under = tuple(wanted)
        tps = await topic_partitions(kafka, lambda t, under=under: t.endswith(".dlq") and t.startswith(under))
        if not tps:
            continue
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        for tp in tps:
            depths[tp.topic] += end[tp] - begin[tp]
    return dict(depths)
