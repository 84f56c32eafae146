"""The desk in-process (in-memory MongoDB, FastStream's test broker): dispatch by hand with its checks
and overrides, transfer to another grid, technicians' own status, heartbeats and silent spells."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from aftersales.routing.app import Settings, build
from aftersales.routing.clocks import now_utc
from aftersales.routing.service import RoutingService
from aftersales.shared.contracts.desk import TechnicianStatus
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

ASSIGNED = "aftersales.assignment.assigned.v1"
QUEUED = "aftersales.assignment.queued.v1"
REASSIGNED = "aftersales.assignment.reassigned.v1"
BY_HAND = "aftersales.assignment.dispatched-by-hand.v1"
STATUS_CHANGED = "aftersales.assignment.technician-status-changed.v1"
SILENT = "aftersales.assignment.technician-silent.v1"
ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
SUP, TECH = "dev-supervisor-token", "dev-technician-token"  # supervisor-1; tech-demo


def grid(gid: str, district: str) -> dict[str, Any]:
    return {
        "id": gid,
        "name": gid,
        "region_path": ["310000", "310100", district],
        "calendar": {"timezone": "UTC", "weekly": ALWAYS},
        "supervisor_id": "supervisor-1",
        "surge": {"backlog_threshold": 10_000, "capacity_factor": 1.5, "automatic": False},
    }


async def put(svc: ServiceUnderTest, path: str, body: dict[str, Any]) -> None:
    r = await svc.http.put(path, json=body, headers=svc.auth())
    assert r.status_code in (200, 201), r.text


async def tech(svc: ServiceUnderTest, tid: str, gid: str, *, capacity: int = 2, **extra: Any) -> None:
    body = {"id": tid, "name": tid, "grid_id": gid, "tier": 1, "capacity": capacity, **extra}
    await put(svc, f"/v1/technicians/{tid}", body)


@pytest.fixture
async def desk() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, technician_silent_after_s=60)) as svc:
        await put(svc, "/v1/grids/xuhui", grid("xuhui", "310104"))
        await put(svc, "/v1/grids/huangpu", grid("huangpu", "310101"))
        await tech(svc, "t1", "xuhui")
        yield svc


def service(svc: ServiceUnderTest) -> RoutingService:
    routing = svc.app.state.routing
    assert isinstance(routing, RoutingService)
    return routing


async def slots(svc: ServiceUnderTest) -> dict[str, int]:
    r = await svc.http.get("/v1/technicians", headers=svc.auth(SUP))
    return {t["id"]: t["active_work_orders"] for t in r.json()}


async def reassign(svc: ServiceUnderTest, ticket_id: str, **body: Any) -> Any:
    return await svc.http.post(f"/v1/work-orders/{ticket_id}/reassign", json=body, headers=svc.auth(SUP))


async def test_a_supervisor_reassigns_and_the_checks_hold_unless_overridden(desk: ServiceUnderTest) -> None:
    await tech(desk, "t2", "xuhui")
    await tech(desk, "printer-only", "xuhui", device_types=["printer"])
    await desk.deliver(ticket_created("A"))
    await desk.published.wait_for(ASSIGNED)

    assert (await reassign(desk, "A", reason="x")).status_code == 422  # neither technician nor grid
    r = await desk.http.post(
        "/v1/work-orders/A/reassign", json={"technician_id": "t2", "reason": "x"}, headers=desk.auth(TECH)
    )
    assert r.status_code == 403  # a technician cannot dispatch
    r = await reassign(desk, "A", technician_id="printer-only", reason="closer")
    assert r.status_code == 422 and r.json()["field"] == "technician_id" and "skill" in r.json()["message"]
    assert await slots(desk) == {"printer-only": 0, "t1": 1, "t2": 0}  # a refusal changes nothing

    r = await reassign(desk, "A", technician_id="t2", reason="t1 is stuck in traffic")
    assert r.status_code == 200, r.text
    assert (
        r.json()["technician_id"] == "t2" and r.json()["status"] == "assigned" and r.json()["via"] == "desk"
    )
    [moved] = await desk.published.wait_for(REASSIGNED)
    assert moved.data["from_technician_id"] == "t1" and moved.data["to_technician_id"] == "t2"
    [record] = await desk.published.wait_for(BY_HAND)
    assert record.data["kind"] == "reassign" and record.data["supervisor_id"] == "supervisor-1"
    assert record.data["overridden"] == [] and record.data["override_reason"] is None
    assert await slots(desk) == {"printer-only": 0, "t1": 0, "t2": 1}

    r = await reassign(desk, "A", technician_id="printer-only", reason="closer", override_reason="knows it")
    assert r.status_code == 200, r.text
    [_, record] = await desk.published.wait_for(BY_HAND, count=2)
    assert record.data["overridden"] == ["skill"] and record.data["override_reason"] == "knows it"
    assert await slots(desk) == {"printer-only": 1, "t1": 0, "t2": 0}


async def test_a_full_technician_takes_work_only_with_an_override(desk: ServiceUnderTest) -> None:
    await tech(desk, "t2", "xuhui", capacity=0)
    await desk.deliver(ticket_created("A"))
    await desk.published.wait_for(ASSIGNED)
    r = await reassign(desk, "A", technician_id="t2", reason="he knows the customer")
    assert r.status_code == 422 and "capacity" in r.json()["message"]
    r = await reassign(desk, "A", technician_id="t2", reason="he knows the customer", override_reason="asked")
    assert r.status_code == 200, r.text
    assert await slots(desk) == {"t1": 0, "t2": 1}


async def test_a_transfer_to_a_grid_without_capacity_queues_it_there_until_someone_comes(
    desk: ServiceUnderTest,
) -> None:
    await desk.deliver(ticket_created("A"))
    await desk.published.wait_for(ASSIGNED)
    r = await reassign(desk, "A", grid_id="huangpu", reason="wrong district")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "queued" and r.json()["grid_id"] == "huangpu"
    [queued] = await desk.published.wait_for(QUEUED)
    assert queued.data["grid_id"] == "huangpu"
    [record] = await desk.published.wait_for(BY_HAND)
    assert record.data["kind"] == "transfer" and record.data["from_grid_id"] == "xuhui"
    assert record.data["to_technician_id"] is None
    assert await slots(desk) == {"t1": 0}

    await tech(desk, "h1", "huangpu")  # capacity arrives in the new grid: its queue drains
    [_, assigned] = await desk.published.wait_for(ASSIGNED, count=2)
    assert assigned.data["ticket_id"] == "A" and assigned.data["technician_id"] == "h1"

    await desk.http.post("/v1/work-orders/A/accept", headers=desk.auth())
    await desk.http.post("/v1/work-orders/A/resolve", json={"resolution_code": "ok"}, headers=desk.auth())
    r = await reassign(desk, "A", technician_id="t1", reason="late")
    assert r.status_code == 409  # resolved: nothing to move
    assert (await reassign(desk, "nope", technician_id="t1", reason="x")).status_code == 404


async def test_a_technician_off_or_busy_gets_no_new_work_and_available_again_drains(
    desk: ServiceUnderTest,
) -> None:
    await tech(desk, "tech-demo", "xuhui")
    r = await desk.http.put("/v1/technicians/me/status", json={"status": "off"}, headers=desk.auth(SUP))
    assert r.status_code == 404 and r.json()["field"] == "technician_id"  # supervisor-1 is no technician
    r = await desk.http.put("/v1/technicians/me/status", json={"status": "nap"}, headers=desk.auth(TECH))
    assert r.status_code == 422
    await service(desk).availability.set_status("t1", TechnicianStatus.BUSY)  # as t1's own token would
    r = await desk.http.put("/v1/technicians/me/status", json={"status": "off"}, headers=desk.auth(TECH))
    assert r.status_code == 200 and r.json()["status"] == "off"
    [changed, _] = await desk.published.wait_for(STATUS_CHANGED, count=2)
    assert changed.data["status"] == "busy" and changed.data["previous_status"] == "available"

    await desk.deliver(ticket_created("A"))
    await desk.published.wait_for(QUEUED)
    r = await reassign(desk, "A", technician_id="tech-demo", reason="x", override_reason="y")
    assert r.status_code == 422 and "off duty" in r.json()["message"]  # off is never overridden

    r = await desk.http.put(
        "/v1/technicians/me/status", json={"status": "available"}, headers=desk.auth(TECH)
    )
    assert r.status_code == 200
    [assigned] = await desk.published.wait_for(ASSIGNED)
    assert assigned.data["technician_id"] == "tech-demo"


async def test_a_silent_technician_is_flagged_once_per_spell_and_gets_no_new_work(
    desk: ServiceUnderTest,
) -> None:
    routing = service(desk)
    await tech(desk, "tech-demo", "xuhui", capacity=5)
    await tech(desk, "t1", "xuhui", capacity=0)  # only tech-demo can take work
    r = await desk.http.post("/v1/technicians/me/heartbeat", headers=desk.auth(TECH))
    assert r.status_code == 200 and r.json()["last_heartbeat_at"]
    await desk.deliver(ticket_created("A"))
    [assigned] = await desk.published.wait_for(ASSIGNED)
    assert assigned.data["technician_id"] == "tech-demo"

    await routing.store.technicians.update_one(
        {"_id": "tech-demo"}, {"$set": {"last_heartbeat_at": now_utc() - timedelta(seconds=61)}}
    )
    assert await routing.availability.flag_silent() == 1
    assert await routing.availability.flag_silent() == 0  # one flag per spell, not per pass
    [silent] = await desk.published.wait_for(SILENT)
    assert silent.data["held_ticket_ids"] == ["A"] and silent.data["supervisor_id"] == "supervisor-1"
    r = await desk.http.get("/v1/technicians/tech-demo", headers=desk.auth(SUP))
    assert r.json()["silent_since"] is not None
    assert (await desk.http.get("/v1/work-orders/A", headers=desk.auth())).json()[
        "technician_id"
    ] == "tech-demo"

    await desk.deliver(ticket_created("B"))
    await desk.published.wait_for(QUEUED)  # nobody else: B waits rather than go to a silent client

    r = await desk.http.post("/v1/technicians/me/heartbeat", headers=desk.auth(TECH))
    assert r.status_code == 200 and r.json()["silent_since"] is None
    [_, b] = await desk.published.wait_for(ASSIGNED, count=2)
    assert b.data["ticket_id"] == "B" and b.data["technician_id"] == "tech-demo"
    await routing.store.technicians.update_one(
        {"_id": "tech-demo"}, {"$set": {"last_heartbeat_at": now_utc() - timedelta(seconds=61)}}
    )
    assert await routing.availability.flag_silent() == 1  # a new spell, a new flag


async def test_a_queue_entry_left_in_the_wrong_grid_follows_its_work_order(desk: ServiceUnderTest) -> None:
    routing = service(desk)
    await tech(desk, "t1", "xuhui", capacity=0)
    await desk.deliver(ticket_created("A"))
    await desk.published.wait_for(QUEUED)
    # A transfer whose enqueue landed and whose work-order write lost (or crashed): the entry says
    # huangpu, the work order still waits in xuhui.
    await routing.store.queue.update_one({"_id": "A"}, {"$set": {"grid_id": "huangpu"}})
    assert await routing.queues.drain("huangpu") == 0
    assert await routing.store.queue_length("xuhui") == 1
    await tech(desk, "t1", "xuhui", capacity=1)
    [assigned] = await desk.published.wait_for(ASSIGNED)
    assert assigned.data["ticket_id"] == "A"


async def test_a_reassign_on_a_stale_view_is_refused(desk: ServiceUnderTest) -> None:
    await tech(desk, "t2", "xuhui")
    await desk.deliver(ticket_created("A"))
    [assigned] = await desk.published.wait_for(ASSIGNED)
    holder = assigned.data["technician_id"]
    await service(desk).store.work_orders.update_one({"_id": "A"}, {"$set": {"status": "accepted"}})
    other = "t2" if holder == "t1" else "t1"
    r = await reassign(desk, "A", technician_id=other, reason="x", expected_status="assigned")
    assert r.status_code == 409 and "accepted" in r.json()["message"]
    assert (await slots(desk))[other] == 0
