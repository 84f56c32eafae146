"""Ticket attachments, in-process: a photo, invoice or document streamed onto a ticket, listed and read
back whole; who sees which (internal ones staff only, another channel's ticket 404); the limits of type
(declared and sniffed), size and number, each 4xx naming its field; the event on the timeline without
the file name; erasure deletes bytes and entries."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aftersales.intake.app import Settings, build
from aftersales.intake.attachment_service import TicketFiles
from aftersales.shared.blobs import CHUNK_BYTES
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, work_order_assigned

ADMIN, SUP, WEB, PHONE = "dev-admin-token", "dev-supervisor-token", "dev-web-token", "dev-phone-token"
TECH = "dev-technician-token"
ADDED = "aftersales.ticket.attachment-added.v1"
MAX_BYTES = 2 * CHUNK_BYTES + 100
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
PDF = b"%PDF-1.7\n" + b"x" * 500
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 300


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**FAST, attachment_max_bytes=MAX_BYTES, attachments_per_ticket=4)
    async with in_process(build, settings) as svc:
        yield svc


async def open_ticket(svc: ServiceUnderTest, token: str = WEB, channel: str = "web") -> str:
    body = {
        "channel": channel,
        "customer": {"name": "Li Lei", "email": "li.lei@example.com", "region_code": "310000"},
        "product": {"device_type": "washer", "serial": "W-1"},
        "title": "Broken",
        "description": "drum does not turn",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def upload(
    svc: ServiceUnderTest, ticket_id: str, data: Any, content_type: str, token: str = WEB, **params: str
) -> Any:
    params.setdefault("kind", "photo")
    headers = {**svc.auth(token), "Content-Type": content_type}
    return await svc.http.post(
        f"/v1/tickets/{ticket_id}/attachments", params=params, content=data, headers=headers
    )


def pieces(data: bytes, size: int = 7000) -> Any:
    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return stream()


async def test_upload_list_download_and_the_event(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    data = PNG + b"\x00" * (2 * CHUNK_BYTES + 50 - len(PNG))  # three chunks, streamed in pieces
    r = await upload(intake, tid, pieces(data), "image/png", filename='../发票 "scan".png')
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["sha256"] == hashlib.sha256(data).hexdigest() and added["size"] == len(data)
    assert added["visibility"] == "customer" and added["filename"] == "发票 scan.png"

    files: TicketFiles = intake.app.state.attachments
    ids = sorted([d["_id"] async for d in files.store.blobs.collection.find({}, {"_id": 1})])
    assert ids == [f"{added['id']}:{n}" for n in range(3)]

    url = f"/v1/tickets/{tid}/attachments"
    listed = (await intake.http.get(url, headers=intake.auth(WEB))).json()
    assert listed["count"] == 1 and listed["items"] == [added]
    r = await intake.http.get(f"{url}/{added['id']}", headers=intake.auth(SUP))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "image/png" and r.headers["content-length"] == str(len(data))
    assert (
        r.headers["content-disposition"].startswith("attachment;")
        and "filename*=UTF-8''" in (r.headers["content-disposition"])
    )

    [event] = await intake.published.wait_for(ADDED)
    assert event.data["attachment_id"] == added["id"] and event.data["size_bytes"] == len(data)
    assert event.data["kind"] == "photo" and event.data["added_by"] == "web-portal"
    assert "filename" not in event.data and "scan" not in str(event.data)
    timeline = (await intake.http.get(f"/v1/tickets/{tid}", headers=intake.auth(SUP))).json()["timeline"]
    [entry] = [e for e in timeline if e["type"] == "ticket.attachment_added"]
    assert entry["attachment_id"] == added["id"] and entry["event_id"] == event.id


async def test_who_sees_which_attachment(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    url = f"/v1/tickets/{tid}/attachments"
    internal = await upload(intake, tid, PDF, "application/pdf", token=SUP, kind="document")
    assert internal.status_code == 201 and internal.json()["visibility"] == "internal"  # staff's default
    shown = await upload(
        intake, tid, PDF, "application/pdf", token=SUP, kind="invoice", visibility="customer"
    )
    assert shown.status_code == 201
    internal_id, shown_id = internal.json()["id"], shown.json()["id"]

    channel = (await intake.http.get(url, headers=intake.auth(WEB))).json()
    assert [a["id"] for a in channel["items"]] == [shown_id]
    assert (await intake.http.get(f"{url}/{internal_id}", headers=intake.auth(WEB))).status_code == 404
    assert (await intake.http.get(f"{url}/{shown_id}", headers=intake.auth(WEB))).status_code == 200
    staff = (await intake.http.get(url, headers=intake.auth(SUP))).json()
    assert [a["id"] for a in staff["items"]] == [internal_id, shown_id]

    # another channel, and a technician not on the ticket: 404 for the ticket and everything on it
    for token in (PHONE, TECH):
        assert (await intake.http.get(url, headers=intake.auth(token))).status_code == 404
        assert (await intake.http.get(f"{url}/{shown_id}", headers=intake.auth(token))).status_code == 404
        assert (await upload(intake, tid, JPEG, "image/jpeg", token=token)).status_code == 404
    r = await upload(
        intake, tid, JPEG, "image/jpeg", visibility="internal"
    )  # a channel: customer-visible only
    assert r.status_code == 403 and r.json()["field"] == "visibility"

    await intake.deliver(work_order_assigned(tid, technician_id="tech-demo", grid_id="grid-7"))
    tech = (await intake.http.get(url, headers=intake.auth(TECH))).json()  # now on the ticket: staff
    assert [a["id"] for a in tech["items"]] == [internal_id, shown_id]
    assert (await upload(intake, tid, JPEG, "image/jpeg", token=TECH)).json()["visibility"] == "internal"
    missing = f"{url}/A-{'0' * 20}"
    assert (await intake.http.get(missing, headers=intake.auth(SUP))).status_code == 404


async def test_type_size_and_number_limits_name_their_field(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    r = await upload(intake, tid, PDF, "application/pdf")  # a photo is not a PDF
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = await upload(intake, tid, PNG, "image/gif", kind="invoice")
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    r = await upload(intake, tid, PDF, "image/png")  # declared PNG, the bytes are a PDF
    assert r.status_code == 415 and r.json()["field"] == "file"
    r = await upload(intake, tid, b"GIF89a" + b"\x00" * 100, "image/jpeg")
    assert r.status_code == 415 and r.json()["field"] == "file"
    r = await upload(intake, tid, PNG, "image/png", kind="receipt")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "kind"
    r = await upload(intake, tid, PNG, "image/png", visibility="everyone")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "visibility"
    r = await upload(intake, tid, b"", "image/png")
    assert r.status_code == 422 and r.json()["field"] == "file"

    big = PNG + b"\x00" * MAX_BYTES
    r = await upload(intake, tid, big, "image/png")  # Content-Length says it: refused before reading
    assert r.status_code == 413 and r.json()["field"] == "file"
    r = await upload(intake, tid, pieces(big, 64 * 1024), "image/png")  # chunked: the running count
    assert r.status_code == 413 and r.json()["field"] == "file"
    files: TicketFiles = intake.app.state.attachments
    assert [d async for d in files.store.blobs.collection.find({})] == []  # nothing of them is left

    for n in range(4):
        r = await upload(intake, tid, JPEG + bytes([n]), "image/jpeg", kind="invoice")
        assert r.status_code == 201, r.text
    r = await upload(intake, tid, JPEG, "image/jpeg")
    assert r.status_code == 409 and r.json()["field"] == "attachments"
    assert (await intake.http.get(f"/v1/tickets/{tid}/attachments", headers=intake.auth(WEB))).json()[
        "count"
    ] == 4
    assert (await upload(intake, "T-nope", JPEG, "image/jpeg", token=SUP)).status_code == 404


async def test_erasure_deletes_the_bytes_and_the_entries(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    data = PNG + b"\x01" * CHUNK_BYTES
    added = (await upload(intake, tid, data, "image/png", filename="李雷的发票.png")).json()
    customer_id = (await intake.http.get(f"/v1/tickets/{tid}", headers=intake.auth(ADMIN))).json()[
        "customer_id"
    ]
    request = ErasureRequested(
        erasure_id="ER-1",
        customer_id=customer_id,
        ticket_ids=[tid],
        chunk=0,
        chunks=1,
        requested_at=datetime.now(UTC),
    )
    await intake.deliver(new_event(request, source="/aftersales/intake", subject=customer_id), copies=2)
    files: TicketFiles = intake.app.state.attachments
    assert [d async for d in files.store.blobs.collection.find({})] == []
    url = f"/v1/tickets/{tid}/attachments"
    assert (await intake.http.get(url, headers=intake.auth(SUP))).json() == {"items": [], "count": 0}
    assert (await intake.http.get(f"{url}/{added['id']}", headers=intake.auth(SUP))).status_code == 404
    assert await files.erase(tid) == 0  # again: nothing left
