"""Helpers of the security suite: a routing set-up whose technicians are known tokens, ticket bodies, and
small HTTP helpers."""

from __future__ import annotations

from typing import Any

import httpx
from harness import Platform, auth, unique, wait_until
from routing_demo import demo_calendar

ADMIN, SUPERVISOR = auth(), auth("dev-supervisor-token")
WEB, OTHER_WEB, PHONE, IOT = (
    auth("dev-web-token"),
    auth("other-web-token"),
    auth("dev-phone-token"),
    auth("dev-iot-token"),
)
TECH, OTHER_TECH = auth("dev-technician-token"), auth("other-technician-token")
# Two grids, one technician each, so a ticket's region decides who works on it.
REGION_OF = {"tech-demo": "310000/310100/310104", "tech-other": "110000/110100/110101"}


async def set_up_routing(client: httpx.AsyncClient, platform: Platform) -> None:
    routing = platform.url("routing")
    for tech, region in REGION_OF.items():
        grid_id = f"g-{tech}"
        grid = {
            "id": grid_id,
            "name": grid_id,
            "region_path": region.split("/"),
            "device_types": [],
            "calendar": demo_calendar(),
            "teams": [{"id": f"{grid_id}-t1", "name": "first line"}],
            "neighbours": [],
            "supervisor_id": "supervisor-1",
        }
        response = await client.put(f"{routing}/v1/grids/{grid_id}", json=grid, headers=ADMIN)
        assert response.status_code in (200, 201), response.text
        body = {
            "id": tech,
            "name": tech,
            "grid_id": grid_id,
            "team_id": f"{grid_id}-t1",
            "tier": 1,
            "device_types": [],
            "categories": [],
            "capacity": 50,
            "on_duty": True,
        }
        response = await client.put(f"{routing}/v1/technicians/{tech}", json=body, headers=ADMIN)
        assert response.status_code in (200, 201), response.text


def ticket_body(*, region: str = REGION_OF["tech-demo"], **customer: Any) -> dict[str, Any]:
    person = customer or {"name": "Zhang Wei", "phone": unique_phone(), "email": f"{unique('c')}@example.com"}
    return {
        "channel": "web",
        "customer": {**person, "region_code": region},
        "product": {"device_type": "air_conditioner", "model": "KF-35", "purchase_date": "2026-03-01"},
        "title": "Air conditioner is broken",
        "description": "It does not cool.",
    }


def unique_phone() -> str:
    return "+86139" + str(int(unique("")[:8], 16) % 10**8).zfill(8)


async def submit(client: httpx.AsyncClient, platform: Platform, body: dict[str, Any], headers: Any) -> Any:
    response = await client.post(f"{platform.url('intake')}/v1/tickets", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def assigned_to(client: httpx.AsyncClient, platform: Platform, ticket_id: str) -> str:
    async def technician() -> str | None:
        response = await client.get(f"{platform.url('intake')}/v1/tickets/{ticket_id}", headers=ADMIN)
        tech = response.json().get("technician_id")
        return tech if response.json()["status"] == "assigned" else None

    return await wait_until(f"{ticket_id} assigned", technician, 40)


async def work(
    client: httpx.AsyncClient, platform: Platform, ticket_id: str, step: str, headers: Any, **body: str
) -> None:
    url = f"{platform.url('routing')}/v1/work-orders/{ticket_id}/{step}"
    response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 200, f"{step}: {response.status_code} {response.text}"


async def resolve(client: httpx.AsyncClient, platform: Platform, ticket_id: str, headers: Any) -> None:
    for step in ("accept", "start"):
        await work(client, platform, ticket_id, step, headers)
    await work(client, platform, ticket_id, "resolve", headers, resolution_code="replaced_part")
