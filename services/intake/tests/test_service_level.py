"""Intake in-process (FastStream's TestKafkaBroker, in-memory MongoDB): requests over HTTP and Kafka
become tickets and `ticket.created` events; replays and IoT alert storms fold into one ticket; routing's
events move the ticket along, once however often they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.intake.app import Settings, build
from aftersales.intake.consumers import Requests
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.kafka import Delivery, PerEvent
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    in_process,
    work_order_assigned,
    work_order_resolved,
)

CREATED = "aftersales.ticket.created.v1"
WEB, IOT = "dev-web-token", "dev-iot-token"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


def web_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "web",
        "customer": {
            "name": "Li Lei",
            "phone": "+8613800138000",
            "tier": "gold",
            "region_code": "310000/310100/310104",
        },
        "product": {"device_type": "air_conditioner", "model": "KF-35", "serial": "AC-1"},
        "title": "Air conditioner is broken",
        "description": "It makes a loud noise and does not cool.",
    }
    return {**body, **overrides}


def iot_request(serial: str, observed_at: datetime) -> dict[str, Any]:
    return web_request(
        channel="iot",
        customer={"id": f"OWNER-{serial}", "region_code": "310000/310100"},
        product={"device_type": "chiller", "serial": serial},
        title="Alert E42",
        description="",
        iot={"fault_code": "E42", "severity": 3, "observed_at": observed_at.isoformat()},
    )


def request_event(body: dict[str, Any], *, key: str) -> CloudEvent:
    return CloudEvent(type="aftersales.request.submitted.v1", source="/gateways/iot", subject=key, data=body)


async def test_a_posted_request_becomes_a_ticket_and_a_created_event(intake: ServiceUnderTest) -> None:
    r = await intake.http.post("/v1/tickets", json=web_request(), headers=intake.auth(WEB))
    assert r.status_code == 201, r.text
    ticket_id = r.json()["id"]

    [created] = await intake.published.wait_for(CREATED)
    assert created.subject == ticket_id and created.data["channel"] == "web"
    r = await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth())
    assert r.status_code == 200 and r.json()["status"] == "new"


async def test_the_same_request_posted_twice_at_once_opens_one_ticket(intake: ServiceUnderTest) -> None:
    headers = {**intake.auth(WEB), "Idempotency-Key": "web-42"}
    first, second = await asyncio.gather(
        *(intake.http.post("/v1/tickets", json=web_request(), headers=headers) for _ in range(2))
    )

    assert sorted([first.status_code, second.status_code]) == [200, 201], (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    await intake.published_exactly(CREATED)


async def test_an_iot_alert_storm_over_kafka_folds_into_one_ticket(intake: ServiceUnderTest) -> None:
    t0 = datetime.now(UTC)
    alerts = [
        request_event(iot_request("CH-1", t0 + timedelta(milliseconds=i)), key="CH-1") for i in range(20)
    ]
    await asyncio.gather(*(intake.deliver(a) for a in alerts[:10]))
    for alert in alerts[10:]:
        await intake.deliver(alert)
    await intake.deliver(alerts[3])  # a producer's duplicate: counted once

    [created] = await intake.published_exactly(CREATED)
    r = await intake.http.get(f"/v1/tickets/{created.subject}", headers=intake.auth())
    assert r.status_code == 200 and r.json()["alert_count"] == 20
    assert intake.dead_letters == []


async def test_concurrent_iot_alerts_over_http_open_one_ticket(intake: ServiceUnderTest) -> None:
    t0 = datetime.now(UTC)
    responses = await asyncio.gather(
        *(
            intake.http.post(
                "/v1/tickets", json=iot_request("CH-2", t0 + timedelta(seconds=i)), headers=intake.auth(IOT)
            )
            for i in range(8)
        )
    )

    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    r = await intake.http.get(f"/v1/tickets/{responses[0].json()['id']}", headers=intake.auth())
    assert r.json()["alert_count"] == 8


async def test_routing_events_move_the_ticket_along(intake: ServiceUnderTest) -> None:
    r = await intake.http.post("/v1/tickets", json=web_request(), headers=intake.auth(WEB))
    ticket_id = r.json()["id"]

    await intake.deliver(work_order_assigned(ticket_id), replicas=2)
    await intake.deliver(work_order_resolved(ticket_id))

    ticket = (await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth())).json()
    assert (ticket["status"], ticket["technician_id"]) == ("resolved", "tech-42")
    assert [t["type"] for t in ticket["timeline"]] == [  # the assignment, handled twice at once, once
        "ticket.created",
        "assignment.assigned",
        "assignment.resolved",
    ]


@pytest.fixture
def storm_key_queries(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every tickets query that filters on `storm_key` (FerretDB answers it by scanning every ticket)."""
    from aftersales.shared import mongo_in_memory

    seen: list[dict[str, Any]] = []

    async def find_one(self: Any, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(filter, dict) and "storm_key" in filter:
            seen.append(filter)
        await asyncio.sleep(0)
        return self._sync.find_one(filter, *args, **kwargs)

    monkeypatch.setattr(mongo_in_memory._AsyncCollection, "find_one", find_one, raising=False)
    return seen


async def test_storms_find_their_ticket_by_id_even_after_a_crash_between_pointer_and_ticket(
    intake: ServiceUnderTest, storm_key_queries: list[dict[str, Any]]
) -> None:
    """The storm's pointer is written before its ticket: racing openers, a storm reopened after its
    window and a crash that left a pointer to a ticket never written all resolve by `_id`, never by a
    query on `storm_key` (under load on FerretDB those scans fed a timeout-retry-scan spiral)."""
    from aftersales.intake.store import STORMS

    t0 = datetime.now(UTC)
    first = await asyncio.gather(
        *(
            intake.http.post(
                "/v1/tickets", json=iot_request("CH-3", t0 + timedelta(seconds=i)), headers=intake.auth(IOT)
            )
            for i in range(6)
        )
    )
    assert sorted(r.status_code for r in first) == [200] * 5 + [201]
    storm = (await intake.runtime.db[STORMS].find_one({"_id": {"$exists": True}}))["_id"]

    # A crash after the pointer was claimed and before the ticket was written: the pointer names a
    # ticket that does not exist (and the storm's ticket was released meanwhile).
    old = first[0].json()["id"]
    await intake.runtime.db["tickets"].update_one({"_id": old}, {"$set": {"storm_key": f"released:{old}"}})
    await intake.runtime.db[STORMS].update_one({"_id": storm}, {"$set": {"ticket_id": "T-NEVER-WRITTEN"}})

    later = t0 + timedelta(hours=3)
    r = await intake.http.post("/v1/tickets", json=iot_request("CH-3", later), headers=intake.auth(IOT))
    assert r.status_code == 201 and r.json()["id"] == "T-NEVER-WRITTEN", r.text
    r = await intake.http.post(
        "/v1/tickets", json=iot_request("CH-3", later + timedelta(seconds=1)), headers=intake.auth(IOT)
    )
    assert r.status_code == 200 and r.json()["id"] == "T-NEVER-WRITTEN"
    assert storm_key_queries == []


class Untouched:
    """Stands for intake's service where a test shows it is not reached."""

    def __getattr__(self, name: str) -> Any:
        raise LookupError(f"intake.{name} reached")


async def test_a_requests_batch_carrying_more_than_a_batch_of_non_alert_requests_goes_event_by_event() -> (
    None
):
    # A large requests batch is meant for IoT alerts (a storm folds into one write per batch); web or
    # mail requests are one write each however they come, so past one standard batch of them the whole
    # batch is handed to the per-event path, where each has its own timeout and progress counts.
    requests = Requests(Untouched(), Untouched(), concurrency=4, most_others=2)  # type: ignore[arg-type]

    def batch(n: int) -> list[Delivery]:
        return [Delivery(request_event(web_request(), key=f"W-{i}"), "requests", 0, i) for i in range(n)]

    with pytest.raises(PerEvent):
        await requests.on_requests(batch(3))
    with pytest.raises(LookupError, match="reached"):  # two are handled in the whole-batch call
        await requests.on_requests(batch(2))


async def test_a_creation_that_landed_while_its_caller_got_an_error_is_published_when_replayed(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticket's insert is applied, but its answer is lost (a connection broke, the socket timed
    out): the caller sees an error and nobody tells the relay. The caller's retry with the same key is a
    replay, and hands the ticket to the relay: its created event is not left in the outbox."""
    from pymongo.errors import AutoReconnect

    from aftersales.shared import mongo_in_memory

    lost: list[str] = []

    async def insert_then_lose_the_answer(self: Any, document: Any, *args: Any, **kwargs: Any) -> Any:
        result = self._sync.insert_one(document, *args, **kwargs)
        if not lost and "outbox" in document:
            lost.append(document["_id"])
            raise AutoReconnect("connection closed before the answer")
        return result

    monkeypatch.setattr(
        mongo_in_memory._AsyncCollection, "insert_one", insert_then_lose_the_answer, raising=False
    )
    headers = {**intake.auth(WEB), "Idempotency-Key": "web-lost-answer"}
    r = await intake.http.post("/v1/tickets", json=web_request(), headers=headers)
    assert r.status_code == 503 and r.headers["Retry-After"], r.text  # not a 500: send it again
    assert r.json()["error"] == "database_unavailable"
    assert lost and await intake.runtime.db["tickets"].find_one(
        {"_id": lost[0], "outbox.0": {"$exists": True}}
    )

    r = await intake.http.post("/v1/tickets", json=web_request(), headers=headers)
    assert r.status_code == 200 and r.json()["id"] == lost[0], r.text
    [created] = await intake.published.wait_for(CREATED)
    assert created.subject == lost[0]


async def test_a_consumed_batch_of_alerts_claims_the_keys_of_all_its_storms_in_one_write(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, each storm of a batch claimed its alerts' idempotency keys in its own write: one write per
    storm per batch on the IoT path. A redelivered batch still counts each alert once."""
    from aftersales.intake.store import REQUEST_KEYS
    from aftersales.shared import mongo_in_memory

    claims: list[int] = []
    plain_getattr = mongo_in_memory._AsyncCollection.__getattr__

    def counting(self: Any, name: str) -> Any:
        call = plain_getattr(self, name)
        if name != "insert_many" or self._sync.name != REQUEST_KEYS:
            return call

        async def counted(documents: Any, *args: Any, **kwargs: Any) -> Any:
            claims.append(len(documents))
            return await call(documents, *args, **kwargs)

        return counted

    monkeypatch.setattr(mongo_in_memory._AsyncCollection, "__getattr__", counting)
    t0 = datetime.now(UTC)
    batch = [
        Delivery(
            request_event(iot_request(f"CH-B{d}", t0 + timedelta(seconds=i)), key=f"CH-B{d}"),
            "requests",
            0,
            10 * i + d,
        )
        for i in range(4)
        for d in range(5)
    ]
    requests = Requests(intake.app.state.intake, intake.app.state.progress, concurrency=4, most_others=0)
    await requests.on_requests(batch)
    await requests.on_requests(batch)  # redelivered after a crash before the commit
    assert claims == [20, 20]

    created = await intake.published_exactly(CREATED, count=5)
    for event in created:
        r = await intake.http.get(f"/v1/tickets/{event.subject}", headers=intake.auth())
        assert r.status_code == 200 and r.json()["alert_count"] == 4, r.text
