"""The in-process test tier itself: the in-memory database answers the PyMongo async calls the stores,
the outbox and the timers make, and a service built on it consumes, publishes and dead-letters through
FastStream's TestKafkaBroker as it would through Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi import FastAPI
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
)

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import TicketClosed, TicketCreated
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import is_transient
from aftersales.shared.http import create_app
from aftersales.shared.kafka import CURRENT_DELIVERY, subscribe
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import OutboxRelay, new_with_events
from aftersales.shared.runtime import OUTBOX_STALL_S, RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.testing import FAST, InMemoryMongo, ServiceUnderTest, in_process, ticket_created
from aftersales.shared.timers import DurableTimers, Timer

T0 = datetime(2026, 11, 18, 9, 0, 0, 123456, tzinfo=UTC)


def database() -> Database:
    return cast(Database, InMemoryMongo()["test"])


def closed(ticket_id: str) -> CloudEvent:
    data = TicketClosed(ticket_id=ticket_id, reason="confirmed_resolved", closed_at=T0)
    return new_event(data, source="/aftersales/intake", subject=ticket_id)


async def test_the_in_memory_database_answers_the_async_calls_of_the_stores() -> None:
    db = database()
    col = db["docs"]
    await col.create_index([("key", 1)], unique=True)
    await col.insert_one({"_id": "a", "key": "ka", "n": 0, "at": T0})
    with pytest.raises(DuplicateKeyError):
        await col.insert_one({"_id": "b", "key": "ka"})
    with pytest.raises(BulkWriteError) as refused:
        await col.insert_many([{"_id": "b", "key": "kb"}, {"_id": "c", "key": "ka"}], ordered=False)
    assert [e["index"] for e in refused.value.details["writeErrors"]] == [1]

    won = await col.update_one({"_id": "a", "n": 0}, {"$inc": {"n": 1}, "$push": {"log": {"$each": [1, 2]}}})
    lost = await col.update_one({"_id": "a", "n": 0}, {"$inc": {"n": 1}})
    assert (won.modified_count, lost.modified_count) == (1, 0)
    after = await col.find_one_and_update(
        {"_id": "a"}, {"$set": {"m": True}}, return_document=ReturnDocument.AFTER
    )
    assert after is not None and after["n"] == 1 and after["log"] == [1, 2] and after["m"] is True
    # Timezone-aware, to the millisecond the server keeps.
    assert after["at"] == T0.replace(microsecond=123000) and after["at"].utcoffset() == timedelta(0)

    assert await col.count_documents({}) == 2
    assert [d["_id"] async for d in col.find({}, {"_id": 1}).sort([("_id", -1)]).limit(1)] == ["b"]
    assert [d["_id"] for d in await col.find({"n": {"$exists": True}}).to_list()] == ["a"]
    groups = [d async for d in await col.aggregate([{"$group": {"_id": "$n", "c": {"$sum": 1}}}])]
    assert sorted((g["_id"] is None, g["c"]) for g in groups) == [(False, 1), (True, 1)]
    written = await col.bulk_write(
        [
            UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}),
            UpdateOne({"_id": "z"}, {"$set": {"n": 9}}, upsert=True),
        ],
        ordered=False,
    )
    assert (written.modified_count, written.upserted_count) == (1, 1)
    assert await col.find_one_and_delete({"_id": "b"}) is not None
    assert (await db.command("ping"))["ok"] == 1.0


async def test_the_outbox_relay_and_the_timers_run_on_the_in_memory_database() -> None:
    db = database()
    published: list[tuple[str, str]] = []

    async def publish(topic: str, event: CloudEvent) -> None:
        published.append((topic, event.subject))

    await db["tickets"].insert_one(new_with_events({"_id": "T1"}, Topic.TICKETS, [closed("T1")]))
    relay = OutboxRelay(db, ["tickets"], publish)
    assert await relay.drain() == 1 and await relay.pending() == 0
    assert published == [(Topic.TICKETS.value, "T1")]

    timers, fired = DurableTimers(db), list[Timer]()

    async def handler(timer: Timer) -> None:
        fired.append(timer)

    await timers.schedule("tm-1", "sla", T0, {"ticket_id": "T1"})
    assert await timers.fire_due(handler, now=T0 - timedelta(seconds=1)) == 0
    assert await timers.fire_due(handler, now=T0) == 1
    assert await timers.fire_due(handler, now=T0) == 0
    assert [(t.id, t.payload["ticket_id"]) for t in fired] == [("tm-1", "T1")]
    assert await timers.get("tm-1") is None  # a fired timer is deleted


# A minimal service on the shared runtime: what it consumes it remembers, with the record's position,
# and a ticket it sees created it closes again through its outbox.
class Echo:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.seen: list[tuple[str, int, int]] = []  # (subject, partition, offset)
        self.refusals: dict[str, int] = {}  # subject -> how many more attempts the database refuses

    async def handle(self, event: CloudEvent) -> None:
        delivery = CURRENT_DELIVERY.get()
        assert delivery is not None
        if self.refusals.get(event.subject, 0) > 0:  # a database that cannot do it now, whatever asked
            self.refusals[event.subject] -= 1
            raise ExecutionTimeout("operation exceeded time limit", code=50)
        model = event.model()
        if not isinstance(model, TicketCreated):
            raise ValueError(f"{event.type} is not for me")  # not transient: retried, then parked
        await asyncio.sleep(0.001 * (3 - delivery.offset % 3))  # so a later record could overtake
        self.seen.append((event.subject, delivery.partition, delivery.offset))
        doc = new_with_events({"_id": event.id}, Topic.TICKETS, [closed(event.subject)])
        try:
            await self.runtime.db["echoes"].insert_one(doc)
        except DuplicateKeyError:
            return  # a duplicate: applied once
        self.runtime.relay.notify("echoes", event.id)


def build_echo(settings: ServiceSettings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=[Topic.REQUESTS],
            produces=[Topic.TICKETS],
            outbox_collections=["echoes"],
            indexes=[IndexSpec("echoes", [("kind", 1)])],
        ),
    )
    echo = Echo(runtime)
    subscribe(runtime.broker, settings, [Topic.REQUESTS], echo.handle)
    app = create_app(runtime, title="echo", description="echo")
    app.state.echo = echo
    return app


@pytest.fixture
async def echo() -> AsyncIterator[ServiceUnderTest]:
    settings = ServiceSettings(**{**FAST, "service_name": "echo", "kafka_topic_prefix": "t1."})
    async with in_process(build_echo, settings) as svc:
        yield svc


async def test_a_service_consumes_publishes_and_dead_letters_in_process(echo: ServiceUnderTest) -> None:
    service: Any = echo.app.state.echo
    r = await echo.http.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True  # no server was asked

    for subject in "ABA":
        await echo.deliver(ticket_created(subject), topic=Topic.REQUESTS)
    (a, p_a, first), (b, _, _), (a_again, p_a_again, second) = service.seen  # handled before deliver returned
    assert (a, b, a_again) == ("A", "B", "A")
    assert p_a == p_a_again and (first, second) == (0, 1)  # a key's partition, its next offset
    events = await echo.published.wait_for("aftersales.ticket.closed.v1", count=3)
    assert sorted(e.subject for e in events) == ["A", "A", "B"]

    await asyncio.gather(*(echo.deliver(closed(t), topic=Topic.REQUESTS) for t in "CD"))
    assert sorted(h["ce_subject"] for h in echo.dead_letters) == ["C", "D"]
    assert {h["dlq_kind"] for h in echo.dead_letters} == {"retries_exhausted"}
    assert {h["dlq_original_topic"] for h in echo.dead_letters} == {"t1.aftersales.requests.v1"}


async def test_readyz_is_red_while_an_outbox_event_waits_too_long(echo: ServiceUnderTest) -> None:
    relay: Any = echo.runtime.relay
    waited = OUTBOX_STALL_S + 1
    relay.oldest_pending_s = lambda: waited  # the relay's own age is tested in test_relay_peers.py
    r = await echo.http.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["outbox"] is False, r.text
    waited = 0.0
    assert (await echo.http.get("/readyz")).status_code == 200


async def test_a_database_error_that_says_try_later_backs_off_past_the_attempts_and_never_parks(
    echo: ServiceUnderTest,
) -> None:
    service: Any = echo.app.state.echo
    attempts = echo.runtime.settings.consumer_max_attempts
    service.refusals["slow"] = attempts + 2  # more than the attempts an error of the message gets
    await echo.deliver(ticket_created("slow"), topic=Topic.REQUESTS)
    assert [subject for subject, _, _ in service.seen] == ["slow"] and service.refusals["slow"] == 0
    assert echo.dead_letters == []
    await echo.published_exactly("aftersales.ticket.closed.v1")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ExecutionTimeout("operation exceeded time limit", code=50), True),
        (OperationFailure("not primary", code=10107), True),
        (OperationFailure("write conflict", code=112), True),
        (
            OperationFailure(
                "commit failed", code=251, details={"errorLabels": ["TransientTransactionError"]}
            ),
            True,
        ),
        (NetworkTimeout("timed out"), True),
        (OperationFailure("bad value", code=2), False),
        (DuplicateKeyError("E11000 duplicate key", code=11000), False),
        (ValueError("not for me"), False),
    ],
    ids=repr,
)
def test_errors_that_say_try_later_are_transient_and_errors_of_the_request_are_not(
    error: BaseException, transient: bool
) -> None:
    assert is_transient(error) is transient


async def test_an_event_written_while_handling_another_is_published_inside_its_trace(
    echo: ServiceUnderTest,
) -> None:
    """One trace per ticket: the consumed event's trace is current in its handler, the event the handler
    writes keeps it in the outbox document, and the relay publishes it with it."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    consumed = dataclasses.replace(ticket_created("TR"), traceparent=f"00-{trace_id}-{span_id}-01")
    await echo.deliver(consumed, topic=Topic.REQUESTS)
    [published] = await echo.published.wait_for("aftersales.ticket.closed.v1", count=1)
    assert published.traceparent is not None
    _, published_trace, _, flags = published.traceparent.split("-")
    assert published_trace == trace_id and flags == "01"
    without = dataclasses.replace(ticket_created("TR2"), traceparent=None)
    await echo.deliver(without, topic=Topic.REQUESTS)
    events = await echo.published.wait_for("aftersales.ticket.closed.v1", count=2)
    other = next(e for e in events if e.subject == "TR2")
    assert other.traceparent is None or trace_id not in other.traceparent  # no trace leaks across


async def test_one_partition_is_handled_in_offset_order_even_when_published_at_once(
    echo: ServiceUnderTest,
) -> None:
    service: Any = echo.app.state.echo
    await asyncio.gather(*(echo.deliver(ticket_created("K"), topic=Topic.REQUESTS) for _ in range(10)))
    assert [offset for _, _, offset in service.seen] == list(range(10))


async def test_replicas_handle_one_record_at_once_and_copies_one_after_the_other(
    echo: ServiceUnderTest,
) -> None:
    service: Any = echo.app.state.echo
    event = ticket_created("R")
    await echo.deliver(event, topic=Topic.REQUESTS, replicas=2)
    await echo.deliver(event, topic=Topic.REQUESTS, copies=2)
    assert [offset for _, _, offset in service.seen] == [0, 0, 1, 2]
    await echo.published_exactly("aftersales.ticket.closed.v1")


async def test_timers_fire_on_demand_through_the_runtime(echo: ServiceUnderTest) -> None:
    fired: list[str] = []

    async def on_reminder(timer: Timer) -> None:
        fired.append(timer.id)
        if timer.id == "first":  # a handler arming the next one, due by then too
            await echo.runtime.timers.schedule("second", "reminder", timer.due_at + timedelta(seconds=1))

    echo.runtime.timer_routes.on("reminder", on_reminder)
    await echo.runtime.timers.schedule("first", "reminder", T0 + timedelta(days=1))
    assert await echo.fire_timers(now=T0 + timedelta(days=2)) == 2
    assert fired == ["first", "second"]


async def test_the_reliable_consumer_is_the_subscribers_faststream_middleware(echo: ServiceUnderTest) -> None:
    """A record that is not a CloudEvent is parked by the middleware before the subscriber's function
    runs; the AsyncAPI document comes from that real subscriber: CloudEvent deliveries, the types handled."""
    service: Any = echo.app.state.echo
    physical = echo.settings.topic(Topic.REQUESTS)
    await echo.runtime.broker.publish(b"{not json", topic=physical, key=b"X")
    await echo.deliver(ticket_created("Y"), topic=Topic.REQUESTS)
    assert [(h["dlq_kind"], h["dlq_original_topic"]) for h in echo.dead_letters] == [("poison", physical)]
    assert [subject for subject, _, _ in service.seen] == ["Y"]

    spec = (await echo.http.get("/asyncapi.json", headers=echo.auth())).json()
    [channel] = [c for name, c in spec["channels"].items() if name.startswith("t1.aftersales-echo:")]
    assert channel["address"] == physical
    assert "CloudEvents (binary mode) handled" in channel["description"]
    assert {"Delivery", "CloudEvent"} <= set(spec["components"]["schemas"])
