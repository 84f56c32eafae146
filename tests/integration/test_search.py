"""Ticket search on the real stack (intake as a process, real Kafka and the MongoDB-wire server): the
index follows intake's own ticket stream, so a ticket is found by its Chinese text and by its customer's
phone as typed at a desk; a resolution read from routing's stream moves it among the done tickets; and
intake killed (SIGKILL) while tickets are being indexed loses none of them after its restart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from harness import Platform, auth, wait_until
from test_routing_support import produce_events

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import WorkOrderAssigned, WorkOrderResolved
from aftersales.shared.envelope import new_event

SUP, WEB = auth("dev-supervisor-token"), auth("dev-web-token")


def request(i: int, phone: str = "+8613800138000") -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {"name": "王小明", "phone": phone, "region_code": "310000/310100/310104"},
        "product": {"device_type": "air_conditioner", "serial": f"AC-{i:04d}"},
        "title": f"空调不制冷 {i}",
        "description": "室内机漏水，显示E4",
    }


async def found(client: httpx.AsyncClient, **params: Any) -> list[str]:
    r = await client.get("/v1/search/tickets", params=params, headers=SUP)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def routing_event(data: Any, ticket_id: str) -> Any:
    return new_event(data, source="/aftersales/routing", subject=ticket_id)


async def test_tickets_are_found_as_they_change_and_none_is_lost_to_a_crash(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
        first = (await client.post("/v1/tickets", json=request(0), headers=WEB)).json()["id"]

        async def indexed(**params: Any) -> list[str] | None:
            return await found(client, **params) or None

        assert await wait_until("the ticket found by its text", lambda: indexed(q="漏水")) == [first]
        assert await found(client, phone="138 0013 8000") == [first]
        assert await found(client, serial="ac0000") == [first]

        now = datetime.now(UTC)
        work = {"ticket_id": first, "grid_id": "grid-7", "technician_id": "tech-42", "occurred_at": now}
        assigned = WorkOrderAssigned(
            **work, tier=1, via="direct", priority=Priority.P3, category=Category.HARDWARE_FAULT
        )
        resolved = WorkOrderResolved(
            **{**work, "occurred_at": datetime.now(UTC)},
            resolution_code="fixed",
            priority=Priority.P3,
            category=Category.HARDWARE_FAULT,
        )
        topic = platform.topic(Topic.ASSIGNMENTS)
        await produce_events(
            platform.infra, topic, [routing_event(assigned, first), routing_event(resolved, first)]
        )
        done = await wait_until("resolved", lambda: indexed(q="空调", status="resolved", grid_id="grid-7"))
        assert done == [first]
        assert await found(client, q="空调", status=["new", "assigned"]) == []

        # Tickets posted while intake is killed mid-indexing are all found after its restart.
        more = []
        for i in range(1, 13):
            r = await client.post("/v1/tickets", json=request(i, phone="+8613900139000"), headers=WEB)
            assert r.status_code == 201, r.text
            more.append(r.json()["id"])
    intake.kill()
    intake = intake.start()
    await intake.wait_ready(90)
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:

        async def all_found() -> list[str] | None:
            hits = await found(client, phone="13900139000", limit=50)
            return hits if len(hits) == len(more) else None

        assert set(await wait_until("every ticket indexed after the crash", all_found, 60)) == set(more)
