"""Routing in-process (FastStream's TestKafkaBroker, in-memory MongoDB): ticket events in, assignment
events out, work orders over HTTP; duplicates and capacity races apply once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.routing.app import Settings, build
from aftersales.shared.contracts.common import Priority
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

ASSIGNED = "aftersales.assignment.assigned.v1"
QUEUED = "aftersales.assignment.queued.v1"
BREACHED = "aftersales.assignment.sla-breached.v1"
ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
REGION = ["310000", "310100", "310104"]


@pytest.fixture
async def routing() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        grid = {
            "id": "xuhui",
            "name": "Xuhui",
            "region_path": REGION,
            "calendar": {"timezone": "UTC", "weekly": ALWAYS},
            "teams": [{"id": "xuhui-team", "name": "team"}],
            "neighbours": [],
            "supervisor_id": "supervisor-1",
            "surge": {"backlog_threshold": 10_000, "capacity_factor": 1.5, "automatic": False},
        }
        r = await svc.http.put("/v1/grids/xuhui", json=grid, headers=svc.auth())
        assert r.status_code in (200, 201), r.text
        tech = {"id": "t1", "name": "t1", "grid_id": "xuhui", "tier": 1, "capacity": 1}
        r = await svc.http.put("/v1/technicians/t1", json=tech, headers=svc.auth())
        assert r.status_code in (200, 201), r.text
        yield svc


async def work_order(svc: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/work-orders/{ticket_id}", headers=svc.auth())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_created_ticket_is_assigned_and_its_work_order_readable(routing: ServiceUnderTest) -> None:
    await routing.deliver(ticket_created("A"))

    [assigned] = await routing.published.wait_for(ASSIGNED)
    assert assigned.subject == "A"
    assert assigned.data["technician_id"] == "t1" and assigned.data["via"] == "direct"
    wo = await work_order(routing, "A")
    assert wo["status"] == "assigned" and wo["technician_id"] == "t1"
    r = await routing.http.post("/v1/work-orders/A/accept", headers=routing.auth("dev-technician-token"))
    assert r.status_code == 403  # the demo technician token is not t1
    assert routing.dead_letters == []


async def test_the_same_ticket_event_delivered_twice_at_once_assigns_once(routing: ServiceUnderTest) -> None:
    event = ticket_created("A")
    await routing.deliver(event, replicas=2)
    await routing.deliver(event)  # and once more, later

    await routing.published_exactly(ASSIGNED)
    assert routing.published.of_type(QUEUED) == []
    r = await routing.http.get("/v1/technicians/t1", headers=routing.auth())
    assert r.json()["active_work_orders"] == 1


async def test_two_tickets_racing_for_the_last_slot_one_is_assigned_one_queued(
    routing: ServiceUnderTest,
) -> None:
    await asyncio.gather(routing.deliver(ticket_created("A")), routing.deliver(ticket_created("B")))

    [assigned] = await routing.published.wait_for(ASSIGNED)
    [queued] = await routing.published.wait_for(QUEUED)
    assert {assigned.subject, queued.subject} == {"A", "B"}
    assert (await work_order(routing, queued.subject))["status"] == "queued"


async def test_an_sla_timer_past_due_breaches_the_work_order_once(routing: ServiceUnderTest) -> None:
    await routing.deliver(ticket_created("A", priority=Priority.P1))
    [assigned] = await routing.published.wait_for(ASSIGNED)
    due = datetime.fromisoformat(assigned.data["resolution_due"])

    later = due + timedelta(minutes=1)
    assert await routing.fire_timers(now=later) > 0  # the warnings, then the breaches
    assert await routing.fire_timers(now=later) == 0  # nothing fires twice

    await routing.published_exactly(BREACHED, where=lambda e: e.data["clock"] == "resolution")
    assert (await work_order(routing, "A"))["resolution"]["breached"] is True


async def test_an_sla_timer_firing_before_its_work_order_is_written_is_not_lost(
    routing: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ticket reaches routing late (a broker restart held it back): its first threshold is due at
    # once, and the timer loop fires it between the arming and the work order's first write.
    created = datetime.now(UTC) - timedelta(hours=1)
    timers, schedule = routing.runtime.timers, routing.runtime.timers.schedule
    raced: list[int] = []

    async def schedule_then_fire(*args: Any, **kwargs: Any) -> None:
        await schedule(*args, **kwargs)
        if not raced:
            raced.append(await timers.fire_due(routing.runtime.timer_routes))

    monkeypatch.setattr(timers, "schedule", schedule_then_fire)
    await routing.deliver(ticket_created("A", priority=Priority.P1, created_at=created))
    await routing.published.wait_for(ASSIGNED)
    assert len(raced) == 1  # the timer loop ran between the arming and the write

    await routing.fire_timers(now=datetime.now(UTC) + timedelta(minutes=1))  # after its retry delay
    await routing.published_exactly(BREACHED, where=lambda e: e.data["clock"] == "first_response")
    assert raced == [0]  # the early firing did not complete: it looked again once the work order was there


async def test_grid_and_technician_changes_publish_their_configuration_without_names(
    routing: ServiceUnderTest,
) -> None:
    [grid_v1] = await routing.published.wait_for("aftersales.assignment.grid-configured.v1")
    assert grid_v1.subject == "xuhui" and grid_v1.data["version"] == 1
    assert grid_v1.data["calendar"]["timezone"] == "UTC"
    shift = {"0": [{"start": "09:00", "end": "12:00"}]}
    tech = {"id": "t1", "name": "张师傅", "grid_id": "xuhui", "tier": 1, "capacity": 1, "shift": shift}
    r = await routing.http.put("/v1/technicians/t1", json=tech, headers=routing.auth())
    assert r.status_code == 200, r.text

    changes = await routing.published.wait_for("aftersales.assignment.technician-configured.v1", count=2)
    assert [e.data["version"] for e in changes] == [1, 2]
    assert changes[1].data["shift"] == {"0": [{"start": "09:00", "end": "12:00"}]}
    assert changes[1].data["on_duty"] is True and changes[1].data["grid_id"] == "xuhui"
    assert all("name" not in e.data and "张师傅" not in str(e.data) for e in changes)


async def test_dispatch_ranks_technicians_read_once_a_second_and_a_stale_copy_never_overfills(
    routing: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The technicians are read once for a burst of tickets (the read is a whole-collection scan on
    FerretDB); this process's own slots show at once; a slot another replica took meanwhile makes the
    guarded reserve fail, so the technician is never overfilled, and the copy is read again."""
    r = await routing.http.put(
        "/v1/technicians/t2",
        json={"id": "t2", "name": "t2", "grid_id": "xuhui", "tier": 1, "capacity": 4},
        headers=routing.auth(),
    )
    assert r.status_code in (200, 201), r.text
    store = routing.app.state.routing.store
    reads = 0
    find = store.technicians.find

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return find(*args, **kwargs)

    monkeypatch.setattr(store.technicians, "find", counted)
    for ticket in ("A", "B", "C"):
        await routing.deliver(ticket_created(ticket))
    assert len(await routing.published.wait_for(ASSIGNED, count=3)) == 3
    assert reads == 1  # one read for the burst; each slot taken here was applied to the copy

    async def load(tech: str) -> int:
        r = await routing.http.get(f"/v1/technicians/{tech}", headers=routing.auth())
        return int(r.json()["active_work_orders"])

    assert await load("t1") + await load("t2") == 3

    # Another replica fills t2 meanwhile: this copy still shows him with room, and t1 has room too.
    taken = 4 - await load("t2")
    await routing.runtime.db["technicians"].update_one(
        {"_id": "t2"},
        {
            "$inc": {"active_work_orders": taken},
            "$push": {"active_ids": {"$each": [f"X{i}#1" for i in range(taken)]}},
        },
    )
    await routing.runtime.db["technicians"].update_one(
        {"_id": "t1"}, {"$set": {"active_work_orders": 0, "active_ids": []}}
    )
    await routing.deliver(ticket_created("D"))
    assigned = await routing.published.wait_for(ASSIGNED, count=4)
    assert {e.subject: e.data["technician_id"] for e in assigned}["D"] == "t1"
    assert await load("t2") == 4  # at capacity, not over it

    # A change made here shows at once: t2 gets room for one more, and the next ticket is his.
    r = await routing.http.put(
        "/v1/technicians/t2",
        json={"id": "t2", "name": "t2", "grid_id": "xuhui", "tier": 1, "capacity": 5},
        headers=routing.auth(),
    )
    assert r.status_code == 200, r.text
    before = reads
    await routing.deliver(ticket_created("E"))
    assigned = await routing.published.wait_for(ASSIGNED, count=5)
    assert {e.subject: e.data["technician_id"] for e in assigned}["E"] == "t2"
    assert reads == before + 1 and await load("t2") == 5


async def test_a_technician_found_stale_by_a_guarded_write_is_read_again_alone(
    routing: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A technician's document holds his slots, so the whole collection grows with the held work: the
    copy of one technician a guarded write found stale is read again by `_id`, not with all the others."""
    store = routing.app.state.routing.store
    reads: list[str] = []
    find, find_one = store.technicians.find, store.technicians.find_one

    def all_read(*args: Any, **kwargs: Any) -> Any:
        reads.append("all")
        return find(*args, **kwargs)

    async def one_read(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        reads.append(query["_id"])
        return await find_one(query, *args, **kwargs)

    monkeypatch.setattr(store.technicians, "find", all_read)
    monkeypatch.setattr(store.technicians, "find_one", one_read)
    store.forget_technicians()
    [t1] = await store.technicians_in(["xuhui"])
    assert t1["active_work_orders"] == 0 and reads == ["all"]
    # Another replica fills t1 (capacity 1) meanwhile: the copy still shows him with room.
    await routing.runtime.db["technicians"].update_one(
        {"_id": "t1"}, {"$set": {"active_work_orders": 1, "active_ids": ["X#1"]}}
    )
    assert not await store.reserve("t1", "K#1", 1)  # the guard refuses
    [t1] = await store.technicians_in(["xuhui"])
    assert t1["active_work_orders"] == 1 and reads == ["all", "t1"]
    [t1] = await store.technicians_in(["xuhui"])  # read again once, not at every use
    assert reads == ["all", "t1"]


async def test_a_caller_never_takes_a_copy_another_callers_read_is_still_bringing_up_to_date(
    routing: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A technician sets himself available and his grid's queue drains at once; meanwhile another task
    (a consumer, the housekeeping pass) has begun reading him again. The drain must not take the old
    copy because that read took the stale mark: the mark stays until a read has applied it."""
    store = routing.app.state.routing.store
    await store.technicians_in(["xuhui"])
    find_one = store.technicians.find_one
    reading, go = asyncio.Event(), asyncio.Event()

    async def slow_then_plain(query: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        doc = await find_one(query, *args, **kwargs)
        if not reading.is_set():  # the first read stays in flight until released
            reading.set()
            await go.wait()
        return doc

    monkeypatch.setattr(store.technicians, "find_one", slow_then_plain)
    await routing.runtime.db["technicians"].update_one({"_id": "t1"}, {"$set": {"status": "busy"}})
    store.forget_technicians("t1")
    other = asyncio.create_task(store.technicians_in(["xuhui"]))
    await reading.wait()
    [t1] = await store.technicians_in(["xuhui"])
    assert t1.get("status") == "busy"
    go.set()
    await other


async def test_a_clock_planned_late_records_every_past_due_threshold_in_one_firing(
    routing: ServiceUnderTest,
) -> None:
    """A ticket reaching routing an hour after it came in: its first-response clock is past 50 %, 75 %
    and 100 % at once. One firing records all three in one write, each with its event (one instant),
    and the breach escalates; before, each threshold took its own timer, firing and write."""
    created = datetime.now(UTC) - timedelta(hours=1)
    await routing.deliver(ticket_created("LATE", priority=Priority.P1, created_at=created))
    await routing.published.wait_for(ASSIGNED)
    await routing.fire_timers()  # the service's own sweeper may have fired it already
    warnings = await routing.published.wait_for("aftersales.assignment.sla-warning.v1", count=2)
    [breach] = await routing.published_exactly(BREACHED, where=lambda e: e.data["clock"] == "first_response")
    assert sorted(e.data["threshold_pct"] for e in warnings) == [50, 75]
    assert {e.data["occurred_at"] for e in warnings} == {breach.data["occurred_at"]}  # one firing
    assert (await work_order(routing, "LATE"))["first_response"]["breached"] is True
    await routing.published.wait_for("aftersales.assignment.escalated.v1")
