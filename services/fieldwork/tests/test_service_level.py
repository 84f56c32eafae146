"""Fieldwork in-process (FastStream's TestKafkaBroker, in-memory MongoDB): routing's assignment makes a
technician's work order; a visit is booked, carried out and reported; the signed report is locked and
verifiable; stock is shared safely; every object is authorized; the events carry no personal data."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.reports import PartLine
from aftersales.fieldwork.service import ReportBook
from aftersales.fieldwork.stock import Use
from aftersales.shared.contracts.events import TicketCancelled, WorkOrderReassigned
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    contract_event,
    in_process,
    ticket_created,
    work_order_assigned,
)

TOKENS = {
    "adm": {"subject": "admin", "scopes": ["admin"]},
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "t1": {"subject": "t1", "scopes": ["technician"]},
    "t2": {"subject": "t2", "scopes": ["technician"]},
    "web": {"subject": "web-portal", "scopes": ["channel"], "channel": "web"},
    "phone": {"subject": "phone-desk", "scopes": ["channel"], "channel": "phone"},
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**{**FAST, "api_tokens": json.dumps(TOKENS)})) as running:
        yield running


def as_(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {who}"}


async def assigned(svc: ServiceUnderTest, ticket_id: str, technician: str = "t1", **more: Any) -> None:
    await svc.deliver(ticket_created(ticket_id, submitted_by="http:web-portal"))
    await svc.deliver(work_order_assigned(ticket_id, technician_id=technician, grid_id="xuhui", **more))


def window(hours: int = 2) -> dict[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours)
    return {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=2)).isoformat()}


async def stock_up(
    svc: ServiceUnderTest, location: str, part: str, quantity: int, threshold: int = 0
) -> None:
    body = {"quantity": quantity, "low_stock_threshold": threshold}
    r = await svc.http.post(f"/v1/stock/{location}/{part}/receipts", json=body, headers=as_("sup"))
    assert r.status_code == 200, r.text


async def new_report(svc: ServiceUnderTest, ticket_id: str, who: str = "t1") -> str:
    body = {"ticket_id": ticket_id, "work_performed": "replaced the fan", "resolution_code": "replaced_part"}
    r = await svc.http.post("/v1/reports", json=body, headers=as_(who))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def parts(part: str = "FAN-9", location: str = "van:t1", quantity: int = 1, **more: Any) -> dict[str, Any]:
    return {"part_id": part, "location_id": location, "quantity": quantity, **more}


async def test_visit_report_signature_lock_and_verification(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    r = await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window()}, headers=as_("web"))
    assert r.status_code == 201, r.text
    appointment = r.json()
    assert appointment["technician_id"] == "t1" and appointment["booked_by"] == "channel"
    for step, body in (("depart", None), ("check-in", {"location": {"lat": 31.19, "lon": 121.43}})):
        r = await svc.http.post(f"/v1/appointments/{appointment['id']}/{step}", json=body, headers=as_("t1"))
        assert r.status_code == 200, r.text
    r = await svc.http.post(
        f"/v1/appointments/{appointment['id']}/check-out",
        json={"work_done": "fan replaced"},
        headers=as_("t1"),
    )
    assert r.json()["status"] == "completed" and r.json()["work_s"] >= 0

    await stock_up(svc, "van:t1", "FAN-9", 3, threshold=2)
    report_id = await new_report(svc, "T-1")
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L1"), headers=as_("t1"))
    assert r.status_code == 200 and r.json()["parts"][0]["quantity"] == 1
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L1"), headers=as_("t1"))
    assert r.status_code == 200 and len(r.json()["parts"]) == 1  # a retry takes nothing more
    assert (await svc.http.get("/v1/stock/van:t1/FAN-9", headers=as_("t1"))).json()["on_hand"] == 2

    signature = {"signer_name": "李雷", "png_base64": base64.b64encode(PNG).decode()}
    r = await svc.http.post(f"/v1/reports/{report_id}/sign", json=signature, headers=as_("t1"))
    assert r.status_code == 200, r.text
    sealed = r.json()
    assert sealed["status"] == "signed" and len(sealed["content_sha256"]) == 64

    # Locked: every change is refused with 409 and changes nothing.
    r = await svc.http.patch(f"/v1/reports/{report_id}", json={"work_performed": "x"}, headers=as_("t1"))
    assert r.status_code == 409 and "locked" in r.json()["message"]
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L2"), headers=as_("t1"))
    assert r.status_code == 409
    assert (
        await svc.http.post(f"/v1/reports/{report_id}/sign", json=signature, headers=as_("t1"))
    ).status_code == 409
    r = await svc.http.get(f"/v1/reports/{report_id}/verification", headers=as_("web"))
    assert r.json()["matches"] is True and r.json()["computed_sha256"] == sealed["content_sha256"]
    page = await svc.http.get(f"/v1/reports/{report_id}/view", headers=as_("web"))
    assert page.status_code == 200 and "李雷" in page.text and sealed["content_sha256"] in page.text

    # A correction is a new report naming the old one.
    body = {
        "ticket_id": "T-1",
        "supersedes_report_id": report_id,
        "work_performed": "replaced the fan and belt",
    }
    r = await svc.http.post("/v1/reports", json=body, headers=as_("t1"))
    assert r.status_code == 201 and r.json()["supersedes_report_id"] == report_id

    [signed] = await svc.published_exactly("aftersales.fieldwork.report-signed.v1")
    assert signed.data["content_sha256"] == sealed["content_sha256"]
    await svc.published_exactly("aftersales.fieldwork.stock-low.v1")
    await svc.published_exactly("aftersales.fieldwork.stock-consumed.v1")
    for event in svc.published.events:  # no name, coordinates or signature in any event
        text = json.dumps(event.data, ensure_ascii=False)
        assert "李雷" not in text and "31.19" not in text and "fan replaced" not in text


async def test_the_last_unit_goes_to_exactly_one_of_two_concurrent_reports(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    await assigned(svc, "T-2", technician="t2")
    await stock_up(svc, "warehouse:xuhui", "PUMP-1", 1)
    first, second = await new_report(svc, "T-1", "t1"), await new_report(svc, "T-2", "t2")
    answers = await asyncio.gather(
        svc.http.post(
            f"/v1/reports/{first}/parts", json=parts("PUMP-1", "warehouse:xuhui"), headers=as_("t1")
        ),
        svc.http.post(
            f"/v1/reports/{second}/parts", json=parts("PUMP-1", "warehouse:xuhui"), headers=as_("t2")
        ),
    )
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 409)
    assert refused.json()["field"] == "parts" and "PUMP-1" in refused.json()["message"]
    assert (await svc.http.get("/v1/stock/warehouse:xuhui/PUMP-1", headers=as_("sup"))).json()["on_hand"] == 0


async def test_a_retry_after_a_crash_between_stock_and_report_takes_the_parts_once(
    svc: ServiceUnderTest,
) -> None:
    await assigned(svc, "T-1")
    await stock_up(svc, "van:t1", "FAN-9", 2)
    report_id = await new_report(svc, "T-1")
    book: ReportBook = svc.app.state.reports
    line = PartLine("L1", "FAN-9", "van:t1", 1)
    await book.stockroom.take(line, Use(report_id, "T-1", "L1"))  # the process died right after this
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L1"), headers=as_("t1"))
    assert r.status_code == 200 and len(r.json()["parts"]) == 1
    after = await book.stockroom.stock.load("van:t1", "FAN-9")
    assert (after.on_hand, after.taking) == (1, frozenset())
    await svc.published_exactly("aftersales.fieldwork.stock-consumed.v1")


async def test_every_object_is_authorized(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    r = await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window()}, headers=as_("phone"))
    assert r.status_code == 404  # another channel's customer
    r = await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window()}, headers=as_("t2"))
    assert r.status_code == 403
    r = await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window()}, headers=as_("sup"))
    appointment_id = r.json()["id"]
    assert (
        await svc.http.post(f"/v1/appointments/{appointment_id}/check-in", headers=as_("t2"))
    ).status_code == 404
    assert (
        await svc.http.post(f"/v1/appointments/{appointment_id}/check-in", headers=as_("web"))
    ).status_code == 403
    assert (
        await svc.http.post("/v1/reports", json={"ticket_id": "T-1"}, headers=as_("t2"))
    ).status_code == 403
    report_id = await new_report(svc, "T-1")
    assert (await svc.http.get(f"/v1/reports/{report_id}", headers=as_("phone"))).status_code == 404
    await stock_up(svc, "van:t2", "FAN-9", 5)
    r = await svc.http.post(
        f"/v1/reports/{report_id}/parts", json=parts(location="van:t2"), headers=as_("t1")
    )
    assert r.status_code == 403 and r.json()["field"] == "location_id"
    r = await svc.http.get("/v1/technicians/t1/day", params={"date": "2026-03-01"}, headers=as_("t2"))
    assert r.status_code == 403

    # Reassigned to t2: the work order, its visits and reports are now t2's, no longer t1's.
    moved = WorkOrderReassigned(
        ticket_id="T-1",
        grid_id="xuhui",
        occurred_at=datetime.now(UTC),
        from_technician_id="t1",
        to_technician_id="t2",
        reason="sick",
    )
    await svc.deliver(contract_event(moved, source="/aftersales/routing"))
    assert (
        await svc.http.post(f"/v1/appointments/{appointment_id}/check-in", headers=as_("t1"))
    ).status_code == 404
    r = await svc.http.post(f"/v1/appointments/{appointment_id}/check-in", headers=as_("t2"))
    assert r.status_code == 200 and r.json()["technician_id"] == "t2"


async def test_bad_input_names_the_field(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    bad = {"ticket_id": "T-1", "window_start": window()["window_end"], "window_end": window()["window_start"]}
    r = await svc.http.post("/v1/appointments", json=bad, headers=as_("sup"))
    assert r.status_code == 422 and r.json()["field"] == "window_end"
    report_id = await new_report(svc, "T-1")
    r = await svc.http.post(
        f"/v1/reports/{report_id}/sign",
        json={"signer_name": "x", "png_base64": "R0lGODlh"},
        headers=as_("t1"),
    )
    assert r.status_code == 422 and "PNG" in r.json()["message"]
    r = await svc.http.post(
        f"/v1/reports/{report_id}/parts", json=parts(location="truck:1"), headers=as_("t1")
    )
    assert r.status_code == 422 and r.json()["field"] == "location_id"
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(part="NONE"), headers=as_("t1"))
    assert r.status_code == 409 and r.json()["field"] == "parts"


async def test_a_technicians_day_and_a_cancelled_ticket(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    await svc.deliver(
        work_order_assigned("T-1", technician_id="t1", grid_id="xuhui"), copies=2
    )  # stale copies
    later = (
        await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window(5)}, headers=as_("sup"))
    ).json()
    early = (
        await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window(1)}, headers=as_("sup"))
    ).json()
    day = datetime.fromisoformat(early["window_start"]).date().isoformat()
    r = await svc.http.get(
        "/v1/technicians/t1/day", params={"date": day, "timezone": "UTC"}, headers=as_("t1")
    )
    ids = [a["id"] for a in r.json()["appointments"]]
    assert ids[0] == early["id"] and (later["id"] in ids) == (later["window_start"][:10] == day)

    cancelled = TicketCancelled(ticket_id="T-1", reason="customer withdrew", cancelled_at=datetime.now(UTC))
    await svc.deliver(contract_event(cancelled, source="/aftersales/intake"))
    r = await svc.http.get(f"/v1/appointments/{early['id']}", headers=as_("sup"))
    assert r.json()["status"] == "cancelled"
    r = await svc.http.post("/v1/appointments", json={"ticket_id": "T-1", **window()}, headers=as_("sup"))
    assert r.status_code == 409 and "closed" in r.json()["message"]
    await svc.published_exactly("aftersales.fieldwork.appointment-cancelled.v1", count=2)


async def test_a_delivery_priced_in_fen_prices_every_part_taken_from_it(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    url = "/v1/stock/van:t1/FAN-9/receipts"
    for price in (-1, 10**9, "cheap"):
        r = await svc.http.post(url, json={"quantity": 1, "unit_cost_cents": price}, headers=as_("sup"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "unit_cost_cents", r.text
    for quantity, price in ((2, 1000), (1, 1600)):
        body = {"quantity": quantity, "unit_cost_cents": price}
        assert (await svc.http.post(url, json=body, headers=as_("sup"))).status_code == 200
    r = await svc.http.get("/v1/stock/van:t1/FAN-9", headers=as_("t1"))
    assert (r.json()["on_hand"], r.json()["unit_cost_cents"]) == (3, 1200)  # (2 x 1000 + 1600) / 3
    report_id = await new_report(svc, "T-1")
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(quantity=2), headers=as_("t1"))
    assert r.status_code == 200, r.text
    [used] = await svc.published_exactly("aftersales.fieldwork.stock-consumed.v1")
    assert (used.data["unit_cost_cents"], used.data["quantity"]) == (1200, 2)
    delivered = await svc.published_exactly("aftersales.fieldwork.stock-received.v1", count=2)
    assert sorted(e.data["unit_cost_cents"] for e in delivered) == [1000, 1600]


async def test_a_removed_part_line_returns_its_parts_naming_the_line(svc: ServiceUnderTest) -> None:
    await assigned(svc, "T-1")
    await stock_up(svc, "van:t1", "FAN-9", 3)
    report_id = await new_report(svc, "T-1")
    for line in ("L1", "L2"):
        r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id=line), headers=as_("t1"))
        assert r.status_code == 200, r.text
    line_url = f"/v1/reports/{report_id}/parts/L1"
    assert (await svc.http.delete(line_url, headers=as_("t2"))).status_code == 404  # not t2's report
    assert (await svc.http.delete(line_url, headers=as_("web"))).status_code == 403
    r = await svc.http.delete(line_url, headers=as_("t1"))
    assert r.status_code == 200 and [p["line_id"] for p in r.json()["parts"]] == ["L2"]
    assert (await svc.http.get("/v1/stock/van:t1/FAN-9", headers=as_("t1"))).json()["on_hand"] == 2
    r = await svc.http.delete(line_url, headers=as_("t1"))
    assert r.status_code == 404 and r.json()["field"] == "line_id"  # a retry returns nothing more
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L1"), headers=as_("t1"))
    assert r.status_code == 409 and r.json()["field"] == "line_id"  # a removed line's id is not reused
    signature = {"signer_name": "李雷", "png_base64": base64.b64encode(PNG).decode()}
    assert (
        await svc.http.post(f"/v1/reports/{report_id}/sign", json=signature, headers=as_("t1"))
    ).status_code == 200
    r = await svc.http.delete(f"/v1/reports/{report_id}/parts/L2", headers=as_("t1"))
    assert r.status_code == 409 and "locked" in r.json()["message"]
    assert (await svc.http.get("/v1/stock/van:t1/FAN-9", headers=as_("t1"))).json()["on_hand"] == 2
    returned = "returned"
    [back] = await svc.published_exactly(
        "aftersales.fieldwork.stock-received.v1", where=lambda e: e.data["reason"] == returned
    )
    assert (back.data["report_id"], back.data["ticket_id"], back.data["line_id"]) == (report_id, "T-1", "L1")
    assert back.data["quantity"] == 1


async def test_parts_taken_while_the_report_is_signed_come_back_naming_the_line(
    svc: ServiceUnderTest,
) -> None:
    await assigned(svc, "T-1")
    await stock_up(svc, "van:t1", "FAN-9", 2)
    report_id = await new_report(svc, "T-1")
    book: ReportBook = svc.app.state.reports
    take = book.stockroom.take
    signature = {"signer_name": "李雷", "png_base64": base64.b64encode(PNG).decode()}

    async def signed_meanwhile(line: PartLine, use: Use) -> None:
        r = await svc.http.post(f"/v1/reports/{report_id}/sign", json=signature, headers=as_("t1"))
        assert r.status_code == 200, r.text
        await take(line, use)

    book.stockroom.take = signed_meanwhile  # type: ignore[method-assign]
    r = await svc.http.post(f"/v1/reports/{report_id}/parts", json=parts(line_id="L7"), headers=as_("t1"))
    assert r.status_code == 409, r.text
    after = await book.stockroom.stock.load("van:t1", "FAN-9")
    assert (after.on_hand, after.taking) == (2, frozenset())
    [back] = await svc.published_exactly(
        "aftersales.fieldwork.stock-received.v1", where=lambda e: e.data["reason"] == "returned"
    )
    assert (back.data["report_id"], back.data["ticket_id"], back.data["line_id"]) == (report_id, "T-1", "L7")
