"""fieldwork as a real process on real Kafka + FerretDB, with intake and routing: tickets opened over
HTTP are assigned by routing, fieldwork learns who holds them from routing's events; a visit is booked by
the customer's channel inside the grid's business hours (fieldwork's copy of routing's calendar; a window
outside them is refused), carried out, reported with parts from stock and a photo and signed; the signed
report is locked (409) and its hash (covering the photo's) verifies; two technicians racing for the last
unit of a part: exactly one gets it and the stock never goes negative. The events come out on
`aftersales.fieldwork.v1` as CloudEvents."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import Platform, auth, data_of, headers_of, read_topic, unique, wait_until
from test_routing_support import grid_body, put_all, tech_body

from aftersales.shared.contracts import Topic
from aftersales.shared.settings import DEVELOPMENT_TOKENS

TOKENS = {
    **DEVELOPMENT_TOKENS,
    "fw-t1": {"subject": "fw-t1", "scopes": ["technician"]},
    "fw-t2": {"subject": "fw-t2", "scopes": ["technician"]},
}
WEB, ADMIN, DESK = auth("dev-web-token"), auth("dev-admin-token"), auth("dev-supervisor-token")
SIGNED = "aftersales.fieldwork.report-signed.v1"
DAYTIME = {str(d): [{"start": "08:00", "end": "18:00"}] for d in range(7)}  # the grid's hours, UTC
CONSUMED = "aftersales.fieldwork.stock-consumed.v1"


def ticket(title: str, device: str) -> dict[str, Any]:
    customer = {
        "name": "韩梅梅",
        "email": f"{unique('han.')}@example.com",
        "region_code": "310000/310100/310104",
    }
    return {"channel": "web", "customer": customer, "product": {"device_type": device}, "title": title}


async def holder(client: httpx.AsyncClient, fieldwork: str, ticket_id: str) -> str:
    """Wait until fieldwork knows which technician routing gave the ticket to; return that technician."""

    async def known() -> str | None:
        r = await client.get(f"{fieldwork}/v1/work-orders/{ticket_id}", headers=ADMIN)
        return r.json().get("technician_id") if r.status_code == 200 else None

    return await wait_until(f"fieldwork to learn who holds {ticket_id}", known)


def window_at(ticket_id: str, start: datetime) -> dict[str, str]:
    end = start + timedelta(hours=2)
    return {"ticket_id": ticket_id, "window_start": start.isoformat(), "window_end": end.isoformat()}


async def outside_hours(client: httpx.AsyncClient, fieldwork: str, ticket_id: str, start: datetime) -> Any:
    """Book a window outside the grid's hours until fieldwork refuses it (422); return the refusal. Until
    routing's `grid-configured` has arrived it is accepted unchecked: that booking is called off again."""

    async def refused() -> Any:
        r = await client.post(f"{fieldwork}/v1/appointments", json=window_at(ticket_id, start), headers=WEB)
        if r.status_code == 201 and r.json()["calendar_checked"] is False:
            await step(client, f"{fieldwork}/v1/appointments/{r.json()['id']}/cancel", "dev-web-token")
            return None
        assert r.status_code == 422, r.text
        return r.json()

    return await wait_until("fieldwork to refuse a visit after business hours", refused)


async def step(client: httpx.AsyncClient, url: str, who: str, body: Any = None, status: int = 200) -> Any:
    r = await client.post(url, json=body, headers=auth(who))
    assert r.status_code == status, r.text
    return r.json()


async def test_visit_signed_report_lock_verification_and_the_last_part(platform: Platform) -> None:
    procs = await platform.start_ready("intake", "routing", "fieldwork", API_TOKENS=json.dumps(TOKENS))
    intake, routing, fw = (procs[s].url for s in ("intake", "routing", "fieldwork"))
    async with httpx.AsyncClient(timeout=20) as client:
        await put_all(
            client,
            routing,
            [{**grid_body("xuhui", "310104"), "calendar": {"timezone": "UTC", "weekly": DAYTIME}}],
            [tech_body("fw-t1", "xuhui", capacity=1), tech_body("fw-t2", "xuhui", capacity=1)],
        )
        tickets = []
        for title, device in (("Air conditioner is broken", "air_conditioner"), ("Fridge is warm", "fridge")):
            r = await client.post(f"{intake}/v1/tickets", json=ticket(title, device), headers=WEB)
            assert r.status_code == 201, r.text
            tickets.append(r.json()["id"])
        holders = [await holder(client, fw, t) for t in tickets]
        assert sorted(holders) == ["fw-t1", "fw-t2"]  # capacity 1 each: one ticket per technician
        first, tech = tickets[0], holders[0]

        # The customer's channel books: not after hours (once fieldwork has the grid's calendar), inside
        # them; the technician sets off, arrives and leaves.
        tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        refused = await outside_hours(client, fw, first, tomorrow + timedelta(hours=19))
        assert refused["field"] == "window_start" and "business hours of grid xuhui" in refused["message"]
        booked = await step(
            client,
            f"{fw}/v1/appointments",
            "dev-web-token",
            window_at(first, tomorrow + timedelta(hours=9)),
            201,
        )
        assert booked["technician_id"] == tech and booked["calendar_checked"] is True
        visit = f"{fw}/v1/appointments/{booked['id']}"
        other = holders[1]
        await step(client, f"{visit}/check-in", other, None, 404)  # not their work order
        await step(client, f"{visit}/depart", tech)
        await step(client, f"{visit}/check-in", tech, {"location": {"lat": 31.19, "lon": 121.43}})
        done = await step(client, f"{visit}/check-out", tech, {"work_done": "replaced the fan"})
        assert done["status"] == "completed" and done["travel_s"] is not None and done["work_s"] is not None

        # Stock: two fans (25.00 each) in the technician's van, one pump left in the grid's warehouse.
        for location, part, receipt in (
            (f"van:{tech}", "FAN-9", {"quantity": 2, "unit_cost_cents": 2500}),
            ("warehouse:xuhui", "PUMP-1", {"quantity": 1}),
        ):
            r = await client.post(f"{fw}/v1/stock/{location}/{part}/receipts", json=receipt, headers=DESK)
            assert r.status_code == 200, r.text
        reports = {}
        for ticket_id, who in zip(tickets, holders, strict=True):
            body = {
                "ticket_id": ticket_id,
                "work_performed": "换风扇 replaced the fan",
                "resolution_code": "replaced_part",
            }
            reports[who] = (await step(client, f"{fw}/v1/reports", who, body, 201))["id"]
        report = f"{fw}/v1/reports/{reports[tech]}"
        fan = {"line_id": "L1", "part_id": "FAN-9", "location_id": f"van:{tech}", "quantity": 1}
        await step(client, f"{report}/parts", tech, fan)

        # Both technicians take the warehouse's last pump at once: exactly one gets it.
        pump = {"part_id": "PUMP-1", "location_id": "warehouse:xuhui", "quantity": 1}
        answers = await asyncio.gather(
            *(
                client.post(f"{fw}/v1/reports/{reports[who]}/parts", json=pump, headers=auth(who))
                for who in holders
            )
        )
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        r = await client.get(f"{fw}/v1/stock/warehouse:xuhui/PUMP-1", headers=DESK)
        assert r.json()["on_hand"] == 0

        # A photo uploaded as raw bytes is on the report by its SHA-256 (stored in FerretDB's chunks).
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        r = await client.post(
            f"{report}/photos", content=png, headers={**auth(tech), "Content-Type": "image/png"}
        )
        assert r.status_code == 201, r.text
        photo = r.json()
        assert photo["sha256"] == hashlib.sha256(png).hexdigest()
        assert (await client.get(report, headers=WEB)).json()["photo_files"] == [photo]
        r = await client.get(f"{report}/photos/{photo['photo_id']}", headers=WEB)
        assert r.status_code == 200 and r.content == png

        # The customer signs: the report is locked; a change is refused; the hash verifies.
        strokes = [[[10, 20], [30, 45.5], [60, 40]], [[70, 20], [90, 60]]]
        signed = await step(client, f"{report}/sign", tech, {"signer_name": "韩梅梅", "strokes": strokes})
        assert signed["status"] == "signed"
        r = await client.patch(report, json={"work_performed": "something else"}, headers=auth(tech))
        assert r.status_code == 409, r.text
        await step(client, f"{report}/parts", tech, {**fan, "line_id": "L2"}, 409)
        r = await client.get(f"{report}/verification", headers=WEB)
        assert r.json()["matches"] is True and r.json()["stored_sha256"] == signed["content_sha256"]
        r = await client.get(f"{report}/view", headers=WEB)
        assert r.status_code == 200 and signed["content_sha256"] in r.text

        [record] = await read_topic(
            platform.infra, platform.topic(Topic.FIELDWORK), expect=1, where=lambda r: _type(r) == SIGNED
        )
        headers = headers_of(record)
        assert headers["ce_specversion"] == "1.0" and headers["ce_source"] == "/aftersales/fieldwork"
        assert headers["ce_subject"] == first and headers["ce_id"]
        assert data_of(record)["content_sha256"] == signed["content_sha256"]
        [used] = await read_topic(
            platform.infra,
            platform.topic(Topic.FIELDWORK),
            expect=1,
            # the fan's line: the pump's, when this technician won the race for it, is another event
            where=lambda r: (
                _type(r) == CONSUMED
                and data_of(r)["report_id"] == reports[tech]
                and data_of(r)["line_id"] == "L1"
            ),
        )
        assert (data_of(used)["line_id"], data_of(used)["unit_cost_cents"]) == ("L1", 2500)
        everything = await read_topic(
            platform.infra, platform.topic(Topic.FIELDWORK), expect=10, distinct=True
        )
        kinds = {_type(r) for r in everything}
        assert {
            "aftersales.fieldwork.appointment-booked.v1",
            "aftersales.fieldwork.stock-consumed.v1",
        } <= kinds
        assert all(
            "韩梅梅" not in (r.value or b"").decode() and "31.19" not in (r.value or b"").decode()
            for r in everything
        )


def _type(record: Any) -> str:
    return headers_of(record).get("ce_type", "")
