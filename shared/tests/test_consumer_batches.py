"""Batches of the consumer runtime, without a broker (records are built as a poll gives them):

- a batch handed back after its retry budget is re-polled from each partition's first unfinished record,
  and what finished past that record is passed over, not applied again. Before, the whole poll was
  re-polled and every finished event redone: under overload each re-poll redid the work that had fit in
  the budget, so an overloaded consumer never got ahead;
- a subscription with larger batches (intake's IoT requests) gets a whole-batch timeout that grows with
  its batch, up to the retry budget, and a batch handler can ask for a batch to be handled event by
  event without that counting as a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from aftersales.shared.contracts.events import TicketCancelled
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import RetryLater
from aftersales.shared.failures import failures
from aftersales.shared.kafka import (
    Delivery,
    HandBack,
    PerEvent,
    ReliableConsumer,
    RetryPolicy,
    decode_records,
)
from aftersales.shared.settings import ServiceSettings

TOPIC = "t.tickets"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def record(partition: int, offset: int, ticket: str) -> Record:
    event: CloudEvent = new_event(
        TicketCancelled(ticket_id=ticket, reason=f"{partition}:{offset}", cancelled_at=datetime.now(UTC)),
        source="/test/hand-back",
        subject=ticket,
    )
    headers = tuple((k, v.encode()) for k, v in event.headers().items())
    return Record(TOPIC, partition, offset, ticket.encode(), event.value(), headers)


class Handler:
    """Counts applies per record; the tickets in `stuck` fail transiently while `stuck` holds them."""

    def __init__(self, stuck: set[str]) -> None:
        self.stuck = stuck
        self.applied: Counter[tuple[int, int]] = Counter()

    async def __call__(self, planned: Sequence[Delivery], whole: bool) -> None:
        [delivery] = planned
        if delivery.event.subject in self.stuck:
            await asyncio.sleep(0.01)
            raise RetryLater("the database is overloaded")
        self.applied[(delivery.partition, delivery.offset)] += 1


def consumer(budget_s: float, *, batched: bool = False, **settings: Any) -> ReliableConsumer:
    return ReliableConsumer(
        None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        ServiceSettings(service_name="batches-test", consumer_retry_budget_s=budget_s, **settings),
        group="batches-test",
        retry=RetryPolicy(max_attempts=3, backoff_s=0.05),
        ignore_unknown_types=True,
        batched=batched,
    )


def poll(partition: int, first: int, tickets: list[str]) -> list[Record]:
    return [record(partition, first + i, t) for i, t in enumerate(tickets)]


async def test_a_hand_back_rewinds_to_the_first_unfinished_record_and_the_re_poll_skips_what_finished() -> (
    None
):
    # partition 0: a, b, STUCK, c, stuck again (same key: waits behind it), d; partition 1: e, f, g
    p0 = poll(0, 100, ["a", "b", "stuck", "c", "stuck", "d"])
    p1 = poll(1, 40, ["e", "f", "g"])
    handler, reliable = Handler({"stuck"}), consumer(budget_s=0.4)

    with pytest.raises(HandBack) as handed:
        await reliable.handle(decode_records(p0 + p1), handler)
    # partition 0 goes back to the stuck record; partition 1 finished and is committed whole
    assert handed.value.rewind == {(TOPIC, 0): 102}
    assert handler.applied == {
        (0, 100): 1,
        (0, 101): 1,
        (0, 103): 1,
        (0, 105): 1,
        (1, 40): 1,
        (1, 41): 1,
        (1, 42): 1,
    }

    # the re-poll starts at the rewind point, with records that came in since
    handler.stuck.clear()
    repoll = p0[2:] + poll(0, 106, ["h"])
    await reliable.handle(decode_records(repoll), handler)
    assert handler.applied == {
        **{(0, o): 1 for o in (100, 101, 102, 103, 104, 105, 106)},
        **{(1, o): 1 for o in (40, 41, 42)},
    }  # c and d, finished past the rewind point, were passed over: nothing applied twice
    assert reliable.finished_ahead.offsets == {}  # a whole poll finished: nothing left to remember


async def test_only_records_finished_past_the_rewind_point_are_remembered_and_a_later_rewind_keeps_them() -> (
    None
):
    handler, reliable = Handler({"stuck", "late"}), consumer(budget_s=0.3)
    first = poll(0, 0, ["a", "stuck", "b", "late", "c"])
    with pytest.raises(HandBack) as handed:
        await reliable.handle(decode_records(first), handler)
    assert handed.value.rewind == {(TOPIC, 0): 1}
    assert reliable.finished_ahead.offsets == {(TOPIC, 0): {2, 4}}

    handler.stuck = {"late"}  # the first stuck ticket recovers; another one still fails
    with pytest.raises(HandBack) as again:
        await reliable.handle(decode_records(first[1:]), handler)
    assert again.value.rewind == {(TOPIC, 0): 3}
    assert reliable.finished_ahead.offsets == {(TOPIC, 0): {4}}  # 2 is behind the new rewind point
    assert handler.applied == {(0, 0): 1, (0, 1): 1, (0, 2): 1, (0, 4): 1}


# ------------------------------------------------------------------------------ whole-batch calls


def batched_consumer(*, timeout_s: float, standard_batch: int, budget_s: float) -> ReliableConsumer:
    return consumer(
        budget_s,
        batched=True,
        consumer_handler_timeout_s=timeout_s,
        consumer_batch_max_records=standard_batch,
    )


async def test_a_whole_batch_call_has_the_handler_timeout_per_standard_batch_up_to_the_budget() -> None:
    reliable = batched_consumer(timeout_s=0.2, standard_batch=2, budget_s=5)
    assert reliable._batch_timeout_s(1) == 0.2
    assert reliable._batch_timeout_s(6) == pytest.approx(0.6)
    assert reliable._batch_timeout_s(1000) == 5  # never past the budget (below the max poll interval)

    calls: list[tuple[int, bool]] = []

    async def slow_whole_batch(planned: Sequence[Delivery], whole: bool) -> None:
        calls.append((len(planned), whole))
        await asyncio.sleep(0.4)  # longer than one handler timeout, shorter than three

    await reliable.handle(decode_records(poll(0, 0, [f"t{i}" for i in range(6)])), slow_whole_batch)
    assert calls == [(6, True)]  # applied whole, first time: not cut for its size and retried


async def test_a_batch_handler_asking_for_event_by_event_is_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reliable = batched_consumer(timeout_s=5, standard_batch=500, budget_s=5)
    calls: list[tuple[int, bool]] = []

    async def per_event_please(planned: Sequence[Delivery], whole: bool) -> None:
        calls.append((len(planned), whole))
        if whole:
            raise PerEvent("mostly work a whole-batch call does not make cheaper")

    failed_before = failures()
    with caplog.at_level(logging.WARNING, logger="aftersales.kafka"):
        await reliable.handle(decode_records(poll(0, 0, ["a", "b", "c"])), per_event_please)
    assert calls == [(3, True), (1, False), (1, False), (1, False)]
    assert failures() == failed_before and caplog.records == []


async def test_a_whole_batch_call_that_times_out_is_applied_in_halves_in_order_down_to_single_events() -> (
    None
):
    # The store manages two events within one timeout: 8 at once time out, then 4, then the pairs apply.
    reliable = batched_consumer(timeout_s=0.2, standard_batch=500, budget_s=30)
    calls: list[list[int]] = []

    async def overloaded(planned: Sequence[Delivery], whole: bool) -> None:
        calls.append([d.offset for d in planned])
        await asyncio.sleep(0.08 * len(planned))

    records = poll(0, 0, ["a", "b", "a", "c", "a", "d", "e", "a"])
    await reliable.handle(decode_records(records), overloaded)
    assert calls == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5, 6, 7], [4, 5], [6, 7]]


async def test_after_a_timeout_later_polls_are_offered_in_the_size_that_fitted_and_grow_back_when_fast() -> (
    None
):
    """Before, each poll was offered whole again after a split, timed out again and threw away the work
    of a whole timeout each time (the store does not get faster between two polls)."""
    reliable = batched_consumer(timeout_s=0.2, standard_batch=500, budget_s=30)
    calls: list[int] = []
    per_event_s = 0.04  # four events fit in the timeout, eight do not

    async def overloaded(planned: Sequence[Delivery], whole: bool) -> None:
        calls.append(len(planned))
        await asyncio.sleep(per_event_s * len(planned))

    await reliable.handle(decode_records(poll(0, 0, [f"a{i}" for i in range(8)])), overloaded)
    assert calls == [8, 4, 4] and reliable.batch_cap.cap == 4
    calls.clear()
    await reliable.handle(decode_records(poll(0, 8, [f"b{i}" for i in range(8)])), overloaded)
    assert calls == [4, 4]  # no call of eight timing out first

    per_event_s = 0.001  # the store keeps up again: calls of the cap finish fast, the cap doubles back
    calls.clear()
    await reliable.handle(decode_records(poll(0, 16, [f"c{i}" for i in range(16)])), overloaded)
    assert calls == [4, 4, 4, 4] and reliable.batch_cap.cap > 4
    calls.clear()
    await reliable.handle(decode_records(poll(0, 32, [f"d{i}" for i in range(16)])), overloaded)
    assert calls[0] > 4


async def test_after_a_split_the_per_event_path_takes_only_what_the_batch_handler_did_not_apply() -> None:
    reliable = batched_consumer(timeout_s=0.2, standard_batch=500, budget_s=30)
    calls: list[tuple[list[int], bool]] = []

    async def refuses_offset_5(planned: Sequence[Delivery], whole: bool) -> None:
        calls.append(([d.offset for d in planned], whole))
        if whole and len(planned) > 2:
            await asyncio.sleep(1)  # times out
        if whole and any(d.offset == 5 for d in planned):
            raise PerEvent("this part is better one by one")

    await reliable.handle(decode_records(poll(0, 0, [f"t{i}" for i in range(8)])), refuses_offset_5)
    per_event = sorted(offsets[0] for offsets, whole in calls if not whole)
    assert per_event == [4, 5, 6, 7]  # 0-3 applied whole in pairs; from the refused part on, one by one


class SerialStore:
    """A store that does one write at a time (FerretDB's write lock per database): each handler call makes
    `writes` writes of `write_s` each, so the more calls run at once, the longer each one takes."""

    def __init__(self, writes: int, write_s: float) -> None:
        self.writes, self.write_s = writes, write_s
        self.lock = asyncio.Lock()
        self.applied: Counter[tuple[int, int]] = Counter()
        self.timeouts = 0

    async def __call__(self, planned: Sequence[Delivery], whole: bool) -> None:
        [delivery] = planned
        try:
            for _ in range(self.writes):
                async with self.lock:
                    await asyncio.sleep(self.write_s)
        except asyncio.CancelledError:
            self.timeouts += 1
            raise
        self.applied[(delivery.partition, delivery.offset)] += 1


async def test_handlers_timing_out_on_an_overloaded_store_make_the_consumer_run_fewer_at_once() -> None:
    """Sixteen keys at once on a store that writes one at a time: each call takes sixteen times as long
    as alone and passes its timeout, is cancelled, and is retried in the same company. Before, every
    attempt timed out until the batch was handed back with nothing applied (a chaos run's routing stood
    still that way); now the consumer halves how many keys it runs at once on each timeout and grows it
    back on success, so the poll finishes."""
    store = SerialStore(writes=10, write_s=0.005)  # 50 ms alone, ~800 ms sixteen at once
    reliable = consumer(
        budget_s=5.0, consumer_concurrency=16, consumer_handler_timeout_s=0.3, consumer_backoff_s=0.01
    )
    tickets = [f"k{i}" for i in range(16)]

    await reliable.handle(decode_records(poll(0, 0, tickets)), store)

    assert store.applied == {(0, o): 1 for o in range(16)}
    assert store.timeouts > 0  # the store was overloaded at first ...
    assert reliable.limit.limit < 16  # ... and the consumer ran fewer keys at once since


@dataclass
class StampedRecord(Record):
    timestamp: int = 0


async def test_one_tickets_events_from_two_topics_in_one_poll_are_applied_in_the_order_produced() -> None:
    """The resolution (assignments topic) comes first in the poll, the ticket's facts (tickets topic),
    produced earlier, second; the resolution's handler waits for the facts (RetryLater). Before, the
    key's records were applied in poll order: the resolution retried until the budget ran out and the
    poll was handed back, the facts behind it, again and again."""
    facts, resolution = record(0, 7, "T1"), record(0, 3, "T1")
    polled = [
        StampedRecord("t.assignments", 0, 3, b"T1", resolution.value, resolution.headers, timestamp=2_000),
        StampedRecord(TOPIC, 0, 7, b"T1", facts.value, facts.headers, timestamp=1_000),
    ]
    applied: list[str] = []

    async def handler(planned: Sequence[Delivery], whole: bool) -> None:
        [delivery] = planned
        if delivery.topic == "t.assignments" and TOPIC not in applied:
            raise RetryLater("the ticket's facts have not arrived yet")
        applied.append(delivery.topic)

    await consumer(budget_s=0.5).handle(decode_records(polled), handler)
    assert applied == [TOPIC, "t.assignments"]
