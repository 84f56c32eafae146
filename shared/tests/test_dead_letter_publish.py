"""A DLQ publish that fails backs off and, past the batch's retry budget, hands the batch back: it never
spins, and a poison message is parked once the DLQ answers again. No broker: a stand-in records calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from aftersales.shared.kafka import (
    DLQ_PUBLISH_FAILURES,
    Delivery,
    HandBack,
    ReliableConsumer,
    RetryPolicy,
    decode_records,
)
from aftersales.shared.settings import ServiceSettings


@dataclass
class Record:
    topic: str = "t.tickets"
    partition: int = 0
    offset: int = 7
    key: bytes = b"T-1"
    value: bytes = b"{not json"  # no CloudEvent headers either: poison
    headers: tuple[tuple[str, bytes], ...] = ()


class FlakyBroker:
    """Fails the first `failures` publishes, then accepts; counts every attempt."""

    def __init__(self, failures: int) -> None:
        self.failures, self.attempts, self.published = failures, 0, []

    async def publish(self, value: bytes, *, topic: str, key: bytes, headers: dict[str, str]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise KafkaConnectionError("broker unavailable")
        self.published.append((topic, value, headers))


def consumer(broker: FlakyBroker, budget_s: float) -> ReliableConsumer:
    settings = ServiceSettings(service_name="dlq-test", consumer_retry_budget_s=budget_s)

    return ReliableConsumer(
        broker,  # type: ignore[arg-type]
        settings,
        group="dlq-test",
        retry=RetryPolicy(max_attempts=3, backoff_s=0.05),
        ignore_unknown_types=True,
        batched=False,
    )


async def never(planned: Sequence[Delivery], whole: bool) -> None:
    raise AssertionError("a poison message never reaches the handler")


def failures_counted() -> float:
    return DLQ_PUBLISH_FAILURES.labels("t.tickets")._value.get()


async def test_a_failing_dlq_publish_backs_off_then_parks_the_message() -> None:
    broker, before = FlakyBroker(failures=2), failures_counted()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await consumer(broker, budget_s=30).handle(decode_records([Record()]), never)
    assert broker.attempts == 3 and failures_counted() - before == 2
    assert loop.time() - started >= 0.05 + 0.1  # waited the backoff (0.05 s, then 0.1 s) between tries
    [(topic, value, headers)] = broker.published
    assert (topic, value, headers["dlq_kind"]) == ("t.tickets.dlq", b"{not json", "poison")


async def test_a_dlq_that_stays_down_hands_the_batch_back_without_spinning() -> None:
    broker: Any = FlakyBroker(failures=10**9)
    with pytest.raises(HandBack):
        await consumer(broker, budget_s=1.0).handle(decode_records([Record()]), never)
    # 0.05 + 0.1 + 0.2 + 0.4 s of backoff fill the one-second budget: a handful of tries, not thousands
    assert broker.attempts <= 6 and broker.published == []
