"""The grab-order pool (抢单) in-process (in-memory MongoDB, FastStream's test broker): offers to eligible
technicians, the first claim winning, declines, returns and the fallback to automatic dispatch; and
the unrouted work orders re-routed when a covering grid appears, their breach going to the fallback
supervisor; and a paused clock showing no stale due time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from aftersales.routing.app import Settings, build
from aftersales.routing.clocks import now_utc
from aftersales.shared.contracts.common import Category
from aftersales.shared.settings import DEVELOPMENT_TOKENS
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

ASSIGNED = "aftersales.assignment.assigned.v1"
QUEUED = "aftersales.assignment.queued.v1"
OFFERED = "aftersales.assignment.offered.v1"
CLAIMED = "aftersales.assignment.claimed.v1"
DECLINED = "aftersales.assignment.declined.v1"
RETURNED = "aftersales.assignment.returned.v1"
ESCALATED = "aftersales.assignment.escalated.v1"
ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
TOKENS = {
    **DEVELOPMENT_TOKENS,
    **{f"{t}-token": {"subject": t, "scopes": ["technician"]} for t in ("t1", "t2", "t3", "p1")},
}
POOL = {"categories": ["hardware_fault"], "priorities": ["P3", "P4"], "fallback_after_s": 600}


def grid(gid: str, district: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": gid,
        "name": gid,
        "region_path": ["310000", "310100", district],
        "calendar": {"timezone": "UTC", "weekly": ALWAYS},
        "supervisor_id": "supervisor-1",
        "surge": {"backlog_threshold": 10_000, "capacity_factor": 1.5, "automatic": False},
        **extra,
    }


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {who}-token"}


async def put(svc: ServiceUnderTest, path: str, body: dict[str, Any]) -> None:
    r = await svc.http.put(path, json=body, headers=svc.auth())
    assert r.status_code in (200, 201), r.text


async def tech(svc: ServiceUnderTest, tid: str, gid: str = "xuhui", **extra: Any) -> None:
    body = {"id": tid, "name": tid, "grid_id": gid, "tier": 1, "capacity": 2, **extra}
    await put(svc, f"/v1/technicians/{tid}", body)


@pytest.fixture
async def pooled() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**{**FAST, "api_tokens": json.dumps(TOKENS)}, unrouted_supervisor_id="desk-9")
    async with in_process(build, settings) as svc:
        await put(svc, "/v1/grids/xuhui", grid("xuhui", "310104", pool=POOL))
        await tech(svc, "t1")
        await tech(svc, "t2")
        await tech(svc, "p1", device_types=["printer"])  # not skilled for air conditioners
        yield svc


async def slots(svc: ServiceUnderTest) -> dict[str, int]:
    r = await svc.http.get("/v1/technicians", headers=svc.auth("dev-supervisor-token"))
    return {t["id"]: t["active_work_orders"] for t in r.json()}


async def pool_of(svc: ServiceUnderTest, who: str) -> list[str]:
    r = await svc.http.get("/v1/pool", headers=auth(who))
    assert r.status_code == 200, r.text
    return [w["ticket_id"] for w in r.json()]


async def work_order(svc: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/work-orders/{ticket_id}", headers=svc.auth())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_pool_config_is_validated_naming_the_field(pooled: ServiceUnderTest) -> None:
    for pool, field in (
        ({"fallback_after_s": 0}, "pool.fallback_after_s"),
        ({"categories": ["no-such-category"]}, "pool.categories.0"),
        ({"priorities": ["P3", "P3"]}, "pool.priorities"),
    ):
        r = await pooled.http.put(
            "/v1/grids/xuhui", json=grid("xuhui", "310104", pool=pool), headers=pooled.auth()
        )
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field], r.json()
    r = await pooled.http.get("/v1/grids/xuhui", headers=pooled.auth())
    assert r.json()["pool"] == {**POOL, "fallback_after_s": 600.0}


async def test_an_offer_is_listed_to_the_eligible_and_the_first_claim_wins(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("A"))
    [offer] = await pooled.published.wait_for(OFFERED)
    assert offer.data["offer_no"] == 1 and offer.data["eligible_technicians"] == 2
    wo = await work_order(pooled, "A")
    assert wo["status"] == "offered" and wo["technician_id"] is None and wo["fallback_at"] is not None
    assert await pool_of(pooled, "t1") == ["A"] and await pool_of(pooled, "t2") == ["A"]
    assert await pool_of(pooled, "p1") == []  # not skilled: not offered to him
    r = await pooled.http.post("/v1/work-orders/A/claim", headers=auth("p1"))
    assert r.status_code == 403 and "skill" in r.json()["message"]

    first, second = await asyncio.gather(
        pooled.http.post("/v1/work-orders/A/claim", headers=auth("t1")),
        pooled.http.post("/v1/work-orders/A/claim", headers=auth("t2")),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
    winner = "t1" if first.status_code == 200 else "t2"
    wo = await work_order(pooled, "A")
    assert wo["status"] == "assigned" and wo["technician_id"] == winner and wo["via"] == "pool"
    assert await slots(pooled) == {"p1": 0, "t1": int(winner == "t1"), "t2": int(winner == "t2")}
    [claimed] = await pooled.published_exactly(CLAIMED)
    [assigned] = await pooled.published_exactly(ASSIGNED)
    assert claimed.data["technician_id"] == winner == assigned.data["technician_id"]
    assert assigned.data["via"] == "direct"  # the v1 contract has no "pool"; `claimed` tells it
    assert await pool_of(pooled, "t1") == [] and await pool_of(pooled, "t2") == []
    assert await pooled.fire_timers(now=now_utc() + timedelta(seconds=601)) >= 0
    assert (await work_order(pooled, "A"))["technician_id"] == winner  # the fallback found it claimed


async def test_declined_by_every_eligible_technician_it_falls_back_at_once(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("A"))
    await pooled.published.wait_for(OFFERED)
    r = await pooled.http.post("/v1/work-orders/A/decline", json={"reason": ""}, headers=auth("t1"))
    assert r.status_code == 422  # a reason is required
    r = await pooled.http.post("/v1/work-orders/A/decline", json={"reason": "too far"}, headers=auth("t1"))
    assert r.status_code == 200 and r.json()["status"] == "offered", r.text
    assert await pool_of(pooled, "t1") == [] and await pool_of(pooled, "t2") == ["A"]
    r = await pooled.http.post("/v1/work-orders/A/claim", headers=auth("t1"))
    assert r.status_code == 409  # declined: not his any more
    r = await pooled.http.post("/v1/work-orders/A/decline", json={"reason": "busy"}, headers=auth("t2"))
    assert r.status_code == 200, r.text
    declines = await pooled.published.wait_for(DECLINED, count=2)
    assert [d.data["still_eligible"] for d in declines] == [1, 0]
    wo = await work_order(pooled, "A")
    assert wo["status"] == "assigned" and wo["technician_id"] in ("t1", "t2") and wo["via"] == "direct"
    assert sum((await slots(pooled)).values()) == 1


async def test_an_unclaimed_offer_falls_back_when_its_timer_fires(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("A"))
    await pooled.published.wait_for(OFFERED)
    await pooled.fire_timers()
    assert (await work_order(pooled, "A"))["status"] == "offered"  # not yet due
    await pooled.fire_timers(now=now_utc() + timedelta(seconds=601))
    [assigned] = await pooled.published_exactly(ASSIGNED)
    assert assigned.data["via"] == "direct" and assigned.data["technician_id"] in ("t1", "t2")
    assert (await work_order(pooled, "A"))["fallback_at"] is None


async def test_the_holder_returns_it_to_the_pool_and_his_slot_is_freed(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("A"))
    await pooled.published.wait_for(OFFERED)
    assert (await pooled.http.post("/v1/work-orders/A/claim", headers=auth("t1"))).status_code == 200
    body = {"reason": "needs a ladder"}
    r = await pooled.http.post("/v1/work-orders/A/return", json=body, headers=auth("t2"))
    assert r.status_code == 403  # only the holder
    assert (await pooled.http.post("/v1/work-orders/A/accept", headers=auth("t1"))).status_code == 200
    r = await pooled.http.post("/v1/work-orders/A/return", json=body, headers=auth("t1"))
    assert r.status_code == 200 and r.json()["status"] == "offered" and r.json()["offer_no"] == 2, r.text
    assert await slots(pooled) == {"p1": 0, "t1": 0, "t2": 0}
    assert await pool_of(pooled, "t1") == [] and await pool_of(pooled, "t2") == ["A"]
    [back] = await pooled.published.wait_for(RETURNED)
    assert back.data["technician_id"] == "t1" and back.data["reason"] == "needs a ladder"
    await pooled.published.wait_for(OFFERED, count=2)
    assert (await pooled.http.post("/v1/work-orders/A/claim", headers=auth("t2"))).status_code == 200
    assert await slots(pooled) == {"p1": 0, "t1": 0, "t2": 1}
    # The first offer's fallback timer is stale: it moves nothing.
    await pooled.fire_timers(now=now_utc() + timedelta(seconds=601))
    assert (await work_order(pooled, "A"))["technician_id"] == "t2"


async def test_what_the_pool_does_not_cover_is_dispatched_automatically(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("P1", priority="P1"))  # a priority the pool leaves out
    [assigned] = await pooled.published.wait_for(ASSIGNED)
    assert assigned.data["ticket_id"] == "P1"
    assert (await pooled.http.post("/v1/work-orders/P1/claim", headers=auth("t2"))).status_code == 409
    r = await pooled.http.post(
        "/v1/work-orders/P1/return", json={"reason": "x"}, headers=auth(assigned.data["technician_id"])
    )
    assert r.status_code == 409 and "hand it back" in r.json()["message"]
    for t in ("t1", "t2"):
        await pooled.http.put("/v1/technicians/me/status", json={"status": "busy"}, headers=auth(t))
    await pooled.deliver(ticket_created("B", category=Category.INSTALLATION.value))
    await pooled.deliver(ticket_created("C"))  # pooled, but nobody may claim it now: queued at once
    queued = await pooled.published.wait_for(QUEUED, count=2)
    assert {q.data["ticket_id"] for q in queued} == {"B", "C"}
    assert pooled.published.of_type(OFFERED) == []


async def test_an_unrouted_ticket_escalates_to_the_fallback_supervisor_and_is_rerouted(
    pooled: ServiceUnderTest,
) -> None:
    await pooled.deliver(ticket_created("U", region_code="440000/440300"))
    [queued] = await pooled.published.wait_for(QUEUED)
    assert queued.data["grid_id"] == "unrouted"
    await pooled.fire_timers(now=now_utc() + timedelta(days=30))
    [escalated] = await pooled.published.wait_for(ESCALATED)
    assert escalated.data["level"] == "supervisor" and escalated.data["supervisor_id"] == "desk-9"

    await put(pooled, "/v1/grids/shenzhen", {**grid("shenzhen", "310104"), "region_path": ["440000"]})
    [_, moved] = await pooled.published.wait_for(QUEUED, count=2)
    assert moved.data["grid_id"] == "shenzhen" and "re-routed" in moved.data["reason"]
    assert (await work_order(pooled, "U"))["grid_id"] == "shenzhen"
    await tech(pooled, "t3", "shenzhen")
    [assigned] = await pooled.published.wait_for(ASSIGNED)
    assert assigned.data["ticket_id"] == "U" and assigned.data["technician_id"] == "t3"


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_paused_clock_shows_no_stale_due_time(pooled: ServiceUnderTest) -> None:
    await pooled.deliver(ticket_created("A", priority="P1"))
    [assigned] = await pooled.published.wait_for(ASSIGNED)
    holder = auth(assigned.data["technician_id"])
    assert (await pooled.http.post("/v1/work-orders/A/accept", headers=holder)).status_code == 200
    before = (await work_order(pooled, "A"))["resolution"]
    r = await pooled.http.post("/v1/work-orders/A/pending-customer", json={"reason": "x"}, headers=holder)
    assert r.status_code == 200, r.text
    paused = r.json()["resolution"]
    assert paused["due_at"] is None and paused["paused_at"] is not None
    assert 0 < paused["remaining_s"] <= paused["target_minutes"] * 60
    assert before["due_at"] is not None and before["paused_at"] is None
    r = await pooled.http.post("/v1/work-orders/A/start", headers=holder)
    resumed = r.json()["resolution"]
    # compared as instants: the text of "...24.033Z" sorts before "...24Z"
    assert instant(resumed["due_at"]) >= instant(before["due_at"])
    assert resumed["paused_at"] is None
    assert resumed["remaining_s"] is None
