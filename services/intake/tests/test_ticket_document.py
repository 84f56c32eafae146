"""A ticket's document stays small whatever happens to the ticket: its timeline lives in pages and its
applied events as markers beside it (all by `_id`); redeliveries change nothing however many events
came since; racing and crashing writers lose and duplicate nothing; a work order handed back to the
queue takes the technician off the ticket; a storm's merges are on its timeline. A customer's record
lists no products either."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest

from aftersales.intake import history
from aftersales.intake import store as stores
from aftersales.intake.app import Settings, build
from aftersales.intake.service import TicketProgress
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import SlaClock, SlaWarning, WorkOrderQueued
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import (
    FAST,
    ROUTING,
    ServiceUnderTest,
    contract_event,
    in_process,
    work_order_assigned,
)

T0 = datetime.now(UTC)
WEB, IOT = "dev-web-token", "dev-iot-token"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


def web_request() -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {"name": "Li Lei", "phone": "+8613800138000", "region_code": "310000/310100"},
        "product": {"device_type": "air_conditioner", "serial": "AC-1"},
        "title": "Air conditioner is broken",
        "description": "It makes a loud noise.",
    }


def iot_request(serial: str, observed_at: datetime, severity: int) -> dict[str, Any]:
    return {
        "channel": "iot",
        "customer": {"id": f"OWNER-{serial}", "region_code": "310000/310100"},
        "product": {"device_type": "chiller", "serial": serial},
        "title": "Alert E42",
        "description": "",
        "iot": {"fault_code": "E42", "severity": severity, "observed_at": observed_at.isoformat()},
    }


def sla_warning(ticket_id: str, n: int) -> CloudEvent:
    data = SlaWarning(
        ticket_id=ticket_id,
        grid_id="grid-7",
        occurred_at=T0 + timedelta(seconds=n),
        clock=SlaClock.RESOLUTION,
        threshold_pct=n % 99 + 1,
        due_at=T0 + timedelta(days=1),
    )
    return contract_event(data, source=ROUTING)


def queued(ticket_id: str, at: datetime, round_: int = 1) -> CloudEvent:
    data = WorkOrderQueued(
        ticket_id=ticket_id,
        grid_id="grid-7",
        round=round_,
        occurred_at=at,
        reason="handed back: van broke down",
        priority=Priority.P3,
        category=Category.HARDWARE_FAULT,
    )
    return contract_event(data, source=ROUTING)


async def opened(intake: ServiceUnderTest) -> str:
    r = await intake.http.post("/v1/tickets", json=web_request(), headers=intake.auth(WEB))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def apply(intake: ServiceUnderTest, event: CloudEvent) -> None:
    progress: TicketProgress = intake.app.state.progress
    await progress.on_downstream_event(event.model(), event)


async def stored(intake: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    doc = await intake.runtime.db[stores.TICKETS].find_one({"_id": ticket_id})
    assert doc is not None
    return dict(doc)


async def shown(intake: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth("dev-supervisor-token"))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_the_ticket_stays_small_and_dedupe_holds_past_any_window(intake: ServiceUnderTest) -> None:
    tid = await opened(intake)
    assigned = work_order_assigned(tid, occurred_at=T0)
    await apply(intake, assigned)
    small = len(bson.encode(await stored(intake, tid)))
    warnings = [sla_warning(tid, n) for n in range(1, 601)]
    for event in warnings:
        await apply(intake, event)

    doc = await stored(intake, tid)
    assert "timeline" not in doc and "applied_events" not in doc
    # 600 events later: about the size it had after one, plus at most a settling's worth of entries
    entry = len(bson.encode({"e": doc["last_appended"]["timeline"][-1], "a": warnings[-1].id}))
    assert len(bson.encode(doc)) < small + history.UNSETTLED_MAX * entry + 300
    version = doc["version"]
    for again in (assigned, warnings[0], warnings[-1]):  # settled long ago, settled, not settled yet
        await apply(intake, again)
    assert (await stored(intake, tid))["version"] == version

    timeline = (await shown(intake, tid))["timeline"]
    assert len(timeline) == history.KEEP_TIMELINE  # the last 500 of 602 entries, oldest first
    assert [e["event_id"] for e in timeline] == [e.id for e in warnings[-history.KEEP_TIMELINE :]]
    assert all("seq" not in e for e in timeline)
    pages = await intake.runtime.db[history.TIMELINE].count_documents({"ticket_id": tid})
    assert pages <= history.KEEP_PAGES


async def test_racing_deliveries_put_each_event_on_the_timeline_once(intake: ServiceUnderTest) -> None:
    tid = await opened(intake)
    events = [sla_warning(tid, n) for n in range(1, 31)]
    await asyncio.gather(*(apply(intake, e) for e in events + events))  # every event twice, at once

    timeline = (await shown(intake, tid))["timeline"]
    assert timeline[0]["type"] == "ticket.created"
    assert sorted(e["event_id"] for e in timeline[1:]) == sorted(e.id for e in events)
    assert (await stored(intake, tid))["version"] == len(events)


async def test_a_crash_after_settling_and_before_the_ticket_write_loses_nothing(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "UNSETTLED_MAX", 1)  # every change settles the one before
    tid = await opened(intake)
    first, second = sla_warning(tid, 1), sla_warning(tid, 2)
    await apply(intake, first)
    store: stores.TicketStore = intake.app.state.progress.store
    settle = store.history.settle

    async def settle_then_crash(ticket_id: str, last: Any) -> None:
        await settle(ticket_id, last)
        raise ConnectionError("the process died here")

    monkeypatch.setattr(store.history, "settle", settle_then_crash)
    with pytest.raises(ConnectionError):
        await apply(intake, second)
    monkeypatch.setattr(store.history, "settle", settle)
    await apply(intake, second)  # the redelivery after the restart
    await apply(intake, first)

    timeline = (await shown(intake, tid))["timeline"]
    assert [e.get("event_id") for e in timeline] == [None, first.id, second.id]


async def test_events_are_settled_together_and_dedupe_holds_before_and_after(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes that only append timeline entries and applied events keep them in the ticket until
    `UNSETTLED_MAX` have gathered; one settling then writes them all. Redeliveries are recognised from
    the ticket before and from the markers after; the timeline shows every entry either way."""
    store: stores.TicketStore = intake.app.state.progress.store
    settled: list[int] = []
    settle = store.history.settle

    async def counted(ticket_id: str, last: Any) -> None:
        settled.append(len(last.get("timeline") or ()))
        await settle(ticket_id, last)

    monkeypatch.setattr(store.history, "settle", counted)
    tid = await opened(intake)
    warnings = [sla_warning(tid, n) for n in range(1, 3 * history.UNSETTLED_MAX + 1)]
    for event in warnings[: history.UNSETTLED_MAX - 1]:  # with `ticket.created`: UNSETTLED_MAX entries
        await apply(intake, event)
    assert settled == []
    assert await intake.runtime.db[history.TIMELINE].count_documents({"ticket_id": tid}) == 0
    version = (await stored(intake, tid))["version"]
    await apply(intake, warnings[0])  # a redelivery, known from the ticket itself
    assert (await stored(intake, tid))["version"] == version
    for event in warnings[history.UNSETTLED_MAX - 1 :]:
        await apply(intake, event)
    # 25 entries: three settlings of UNSETTLED_MAX, the last entry still in the ticket
    assert settled == [history.UNSETTLED_MAX] * 3
    assert len((await stored(intake, tid))["last_appended"]["timeline"]) == 1
    version = (await stored(intake, tid))["version"]
    for again in (warnings[0], warnings[history.UNSETTLED_MAX], warnings[-1]):  # markers, markers, ticket
        await apply(intake, again)
    assert (await stored(intake, tid))["version"] == version
    timeline = (await shown(intake, tid))["timeline"]
    assert [e.get("event_id") for e in timeline] == [None, *(e.id for e in warnings)]


async def test_an_event_later_than_every_one_applied_is_not_looked_up_and_an_earlier_one_is(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticket keeps the latest time of the downstream events it applied: an event later than that
    cannot have been applied and needs no marker read; one earlier (late, or a redelivery) is looked up,
    and a ticket stored before the time was kept looks every event up."""
    store: stores.TicketStore = intake.app.state.progress.store
    lookups: list[str] = []
    applied = store.history.applied

    async def counted(ticket_id: str, event_id: str) -> bool:
        lookups.append(event_id)
        return await applied(ticket_id, event_id)

    monkeypatch.setattr(store.history, "applied", counted)
    tid = await opened(intake)
    events = [
        dataclasses.replace(sla_warning(tid, n), time=T0 + timedelta(seconds=n))
        for n in range(1, 3 * history.UNSETTLED_MAX)
    ]
    for event in events[1:]:  # in the order they happened: settled twice on the way
        await apply(intake, event)
    assert lookups == []
    await apply(intake, events[0])  # happened before all of them, delivered after: looked up, applied
    assert lookups == [events[0].id]
    version = (await stored(intake, tid))["version"]
    lookups.clear()
    for again in events:  # redeliveries: from the ticket, or looked up (earlier than the latest)
        await apply(intake, again)
    assert (await stored(intake, tid))["version"] == version
    assert lookups and set(lookups) <= {e.id for e in events}
    timeline = (await shown(intake, tid))["timeline"]
    assert [e.get("event_id") for e in timeline] == [None, *(e.id for e in events[1:]), events[0].id]

    # A ticket stored before `downstream_until` was kept: every event is looked up, and it stays so.
    await intake.runtime.db[stores.TICKETS].update_one({"_id": tid}, {"$unset": {"downstream_until": ""}})
    lookups.clear()
    later = dataclasses.replace(sla_warning(tid, 99), time=T0 + timedelta(days=1))
    await apply(intake, later)
    assert lookups == [later.id]
    assert "downstream_until" not in await stored(intake, tid)


async def test_a_hand_back_to_the_queue_takes_the_technician_off_the_ticket(
    intake: ServiceUnderTest,
) -> None:
    tid = await opened(intake)
    await apply(intake, work_order_assigned(tid, occurred_at=T0))
    await apply(intake, queued(tid, T0 + timedelta(minutes=5)))

    ticket = await shown(intake, tid)
    assert (ticket["status"], ticket["technician_id"], ticket["last_technician_id"]) == (
        "new",
        None,
        "tech-42",
    )
    assert [e["type"] for e in ticket["timeline"]] == [
        "ticket.created",
        "assignment.assigned",
        "assignment.queued",
    ]

    # Assigned again from the queue; the hand-back redriven late (older) goes on the timeline only.
    await apply(intake, work_order_assigned(tid, occurred_at=T0 + timedelta(minutes=9), technician_id="t9"))
    await apply(intake, queued(tid, T0 + timedelta(minutes=5)))
    ticket = await shown(intake, tid)
    assert (ticket["status"], ticket["technician_id"]) == ("assigned", "t9")
    assert [e["type"] for e in ticket["timeline"]][-2:] == ["assignment.assigned", "assignment.queued"]


async def test_a_storm_puts_its_merges_on_the_timeline_and_a_raise_its_rules(
    intake: ServiceUnderTest,
) -> None:
    async def alert(seconds: int, severity: int) -> dict[str, Any]:
        body = iot_request("CH-9", T0 + timedelta(seconds=seconds), severity)
        r = await intake.http.post("/v1/tickets", json=body, headers=intake.auth(IOT))
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    first = await alert(0, 3)
    await alert(1, 3)
    raised = await alert(2, 5)
    assert raised["priority"] == "P1" and raised["id"] == first["id"]

    ticket = await shown(intake, first["id"])
    assert "iot-critical" in ticket["matched_rules"]
    assert [(e["type"], e.get("alert_count")) for e in ticket["timeline"]] == [
        ("ticket.created", None),
        ("ticket.merged", 2),
        ("ticket.merged", 3),
        ("ticket.priority_changed", None),
    ]
    assert ticket["timeline"][-1]["priority"] == "P1"


async def test_a_customer_record_lists_no_products_and_the_customer_read_still_shows_them(
    intake: ServiceUnderTest,
) -> None:
    posted = []
    for serial in ("AC-1", "AC-2", "AC-1"):
        body = {**web_request(), "product": {"device_type": "air_conditioner", "serial": serial}}
        r = await intake.http.post("/v1/tickets", json=body, headers=intake.auth(WEB))
        assert r.status_code == 201, r.text
        posted.append(r.json())
    customer_id = posted[0]["customer_id"]

    record = await intake.runtime.db[stores.CUSTOMERS].find_one({"_id": customer_id})
    assert record is not None and "products" not in record
    r = await intake.http.get(f"/v1/customers/{customer_id}", headers=intake.auth())
    assert r.status_code == 200, r.text
    assert [p["serial"] for p in r.json()["products"]] == ["AC-1", "AC-2"]  # most recently seen first
