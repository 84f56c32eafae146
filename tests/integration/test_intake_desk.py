"""The service desk at intake on the real stack (intake and routing as processes, real Kafka and the
MongoDB-wire server, one platform for the module): a supervisor's priority correction re-plans routing's
work order; merging a duplicate cancels its work order and frees the technician's slot; closing by hand
ends the original's; notes stay internal while messages reach the channel, and no text goes into an
event. Customers as records: created, edited under a version guard, listed per channel, with a change
log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from harness import Infra, Platform, ServiceProcess, auth, data_of, headers_of, read_to_end, wait_until
from test_routing_support import grid_body, put_all, tech_body

from aftersales.shared.contracts import Topic

SUP, WEB, PHONE = auth("dev-supervisor-token"), auth("dev-web-token"), auth("dev-phone-token")
REGION = "310000/310100/310104"
SECRET_TEXT = "the gate code is 4711"


@dataclass
class Desk:
    platform: Platform
    intake: str
    routing: str


@pytest.fixture(scope="module")
async def desk(infra: Infra) -> AsyncIterator[Desk]:
    """Intake and routing, started once for the module; a grid over the district and one technician."""
    processes: list[ServiceProcess] = []
    platform = Platform(infra, processes)
    try:
        await platform.start_ready("intake", "routing")
        async with httpx.AsyncClient(timeout=20) as client:
            await put_all(
                client,
                platform.url("routing"),
                [grid_body("xuhui", "310104")],
                [tech_body("tech-a", "xuhui", capacity=3)],
            )
        yield Desk(platform, platform.url("intake"), platform.url("routing"))
    finally:
        failures = [f"{p.name}: exit code {code}" for p in processes if (code := p.terminate(15)) != 0]
        assert not failures, failures


def request(title: str, email: str = "li.lei@example.com") -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {"name": "Li Lei", "email": email, "region_code": REGION},
        "product": {"device_type": "air_conditioner", "model": "KF-35"},
        "title": title,
        "description": "does not cool",
    }


async def test_correct_merge_close_and_converse_through_routing(desk: Desk) -> None:
    async with httpx.AsyncClient(timeout=20) as client:

        async def work_order(ticket_id: str) -> dict[str, Any] | None:
            r = await client.get(f"{desk.routing}/v1/work-orders/{ticket_id}", headers=SUP)
            return r.json() if r.status_code == 200 else None

        async def held() -> int:
            r = await client.get(f"{desk.routing}/v1/technicians/tech-a", headers=SUP)
            return int(r.json()["active_work_orders"])

        original = (await client.post(f"{desk.intake}/v1/tickets", json=request("first"), headers=WEB)).json()
        duplicate = (
            await client.post(f"{desk.intake}/v1/tickets", json=request("again"), headers=WEB)
        ).json()
        oid, did = original["id"], duplicate["id"]
        for tid in (oid, did):
            await wait_until(f"{tid} assigned", lambda t=tid: _status(client, desk, t, "assigned"))
        assert await held() == 2

        # A correction, guarded by the version the supervisor read: routing re-plans the work order.
        seen = await _ticket(client, desk, oid)
        target = "P1" if seen["priority"] != "P1" else "P2"
        body = {"priority": target, "reason": "gas smell reported by phone"}
        stale = {**SUP, "If-Match": f'"{seen["version"] + 7}"'}
        r = await client.patch(f"{desk.intake}/v1/tickets/{oid}", json=body, headers=stale)
        assert r.status_code == 409 and r.json()["field"] == "If-Match"
        fresh = {**SUP, "If-Match": f'"{seen["version"]}"'}
        r = await client.patch(f"{desk.intake}/v1/tickets/{oid}", json=body, headers=fresh)
        assert r.status_code == 200 and r.json()["priority"] == target, r.text

        async def replanned() -> dict[str, Any] | None:
            wo = await work_order(oid)
            return wo if wo and wo["priority"] == target else None

        await wait_until("routing re-planned the corrected priority", replanned)

        # The duplicate merged into the original: its work order cancelled, the slot freed.
        r = await client.post(
            f"{desk.intake}/v1/tickets/{did}/merge", json={"original_ticket_id": oid}, headers=SUP
        )
        assert r.status_code == 200 and r.json()["merged_into"] == oid, r.text

        async def cancelled() -> dict[str, Any] | None:
            wo = await work_order(did)
            return wo if wo and wo["status"] == "cancelled" else None

        await wait_until("the duplicate's work order cancelled", cancelled)
        await wait_until("the slot freed", lambda: _true(held, 1))
        timeline = (await _ticket(client, desk, oid))["timeline"]
        assert [e["duplicate_ticket_id"] for e in timeline if e["type"] == "ticket.duplicate_merged"] == [did]

        # A note stays internal; a message reaches the channel; neither text is in any event.
        url = f"{desk.intake}/v1/tickets/{oid}"
        r = await client.post(f"{url}/notes", json={"text": SECRET_TEXT}, headers=SUP)
        assert r.status_code == 201, r.text
        r = await client.post(f"{url}/messages", json={"text": "We come tomorrow at 9"}, headers=SUP)
        assert r.status_code == 201, r.text
        message_id = r.json()["id"]
        seen_by_channel = (await client.get(f"{url}/conversation", headers=WEB)).json()["items"]
        assert [e["text"] for e in seen_by_channel] == ["We come tomorrow at 9"]
        staff_view = (await client.get(f"{url}/conversation", headers=SUP)).json()["items"]
        assert [e["kind"] for e in staff_view] == ["note", "message"]

        # Closed by hand: routing ends the original's work order too.
        r = await client.post(f"{url}/close", json={"reason": "fixed on the phone"}, headers=SUP)
        assert r.status_code == 200 and r.json()["close_reason"] == "closed_by_agent", r.text
        await wait_until("the technician holds nothing", lambda: _true(held, 0))

    records = await read_to_end(
        desk.platform.infra,
        desk.platform.topic(Topic.TICKETS),
        where=lambda r: data_of(r).get("ticket_id") in (oid, did),
    )
    kinds = [(headers_of(r)["ce_type"].split(".")[2], data_of(r).get("change")) for r in records]
    for wanted in (
        ("updated", "priority_changed"),
        ("cancelled", None),
        ("duplicate-merged", None),
        ("message-posted", None),
        ("closed", None),
    ):
        assert wanted in kinds, kinds
    posted = [data_of(r) for r in records if headers_of(r)["ce_type"].endswith("message-posted.v1")]
    assert [p["message_id"] for p in posted] == [message_id]
    assert not any(SECRET_TEXT in str(data_of(r)) or "tomorrow at 9" in str(data_of(r)) for r in records)


async def test_customers_as_records(desk: Desk) -> None:
    async with httpx.AsyncClient(base_url=desk.intake, timeout=20) as client:
        body = {"name": "Wang Fang", "phone": "+8613900139000", "region_code": REGION, "tier": "gold"}
        r = await client.post("/v1/customers", json=body, headers=SUP)
        assert r.status_code == 201 and r.json()["tier"] == "gold", r.text
        cid, version = r.json()["id"], r.json()["version"]
        stale = {**SUP, "If-Match": f'"{version + 1}"'}
        r = await client.patch(f"/v1/customers/{cid}", json={"address": "9 Hongqiao Road"}, headers=stale)
        assert r.status_code == 409 and r.json()["field"] == "If-Match"
        r = await client.patch(
            f"/v1/customers/{cid}",
            json={"address": "9 Hongqiao Road"},
            headers={**SUP, "If-Match": f'"{version}"'},
        )
        assert r.status_code == 200 and r.json()["version"] == version + 1, r.text
        r = await client.post(
            f"/v1/customers/{cid}/products", json={"device_type": "washer", "serial": "SN-77"}, headers=SUP
        )
        assert r.status_code == 201 and [p["serial"] for p in r.json()["products"]] == ["SN-77"]

        # A channel's request names the customer: it fills nothing stored, and its tier is ignored.
        ticket = {
            **request("noise", email="x@example.com"),
            "customer": {**body, "name": "Other", "tier": "standard"},
        }
        r = await client.post("/v1/tickets", json=ticket, headers=WEB)
        assert r.status_code == 201 and r.json()["customer_id"] == cid, r.text
        record = (await client.get(f"/v1/customers/{cid}", headers=SUP)).json()
        assert record["name"] == "Wang Fang" and record["tier"] == "gold"

        assert cid in [c["id"] for c in (await client.get("/v1/customers", headers=WEB)).json()["items"]]
        assert cid not in [
            c["id"] for c in (await client.get("/v1/customers", headers=PHONE)).json()["items"]
        ]
        assert (await client.get(f"/v1/customers/{cid}/history", headers=PHONE)).status_code == 404
        log = (await client.get(f"/v1/customers/{cid}/history", headers=SUP)).json()["items"]
        # the request filled the one empty field (its time zone), overwriting nothing
        assert [e["change"] for e in log] == ["filled", "product_added", "edited", "created"]
        assert log[0]["fields"] == ["timezone"] and log[0]["by"] == "http:web-portal"
        assert "Hongqiao" not in str(log)


async def _ticket(client: httpx.AsyncClient, desk: Desk, ticket_id: str) -> dict[str, Any]:
    r = await client.get(f"{desk.intake}/v1/tickets/{ticket_id}", headers=SUP)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def _status(
    client: httpx.AsyncClient, desk: Desk, ticket_id: str, status: str
) -> dict[str, Any] | None:
    doc = await _ticket(client, desk, ticket_id)
    return doc if doc["status"] == status else None


async def _true(read: Any, expected: int) -> bool:
    return bool(await read() == expected)
