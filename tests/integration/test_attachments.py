"""Ticket attachments on the real stack (intake as a process, real Kafka and the MongoDB-wire server): a
~600 KB PNG streamed in pieces without a Content-Length is stored, read back identical (SHA-256), and
its `ticket.attachment-added` event reaches Kafka without the file name; a channel never reads an
internal attachment."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
from harness import Platform, auth, wait_until
from topics import data_of, headers_of, read_to_end

from aftersales.shared.contracts import Topic

SUP, WEB = auth("dev-supervisor-token"), auth("dev-web-token")
ADDED = "aftersales.ticket.attachment-added.v1"


def png(size: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + os.urandom(size))[:size]


async def in_pieces(data: bytes, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def test_a_streamed_photo_comes_back_whole_and_its_event_reaches_kafka(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    data = png(600 * 1024)
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
        body = {
            "channel": "web",
            "customer": {"name": "Li Lei", "email": "li.lei@example.com", "region_code": "310000"},
            "product": {"device_type": "washer"},
            "title": "Broken drum",
            "description": "does not turn",
        }
        r = await client.post("/v1/tickets", json=body, headers=WEB)
        assert r.status_code == 201, r.text
        ticket_id = r.json()["id"]
        url = f"/v1/tickets/{ticket_id}/attachments"
        params = {"kind": "photo", "filename": "李雷-家里.png"}
        headers = {**WEB, "Content-Type": "image/png"}
        r = await client.post(url, params=params, content=in_pieces(data), headers=headers)
        assert r.status_code == 201, r.text
        added = r.json()
        assert added["sha256"] == hashlib.sha256(data).hexdigest() and added["size"] == len(data)

        async with client.stream("GET", f"{url}/{added['id']}", headers=WEB) as download:
            assert download.status_code == 200 and download.headers["content-type"] == "image/png"
            digest = hashlib.sha256()
            async for piece in download.aiter_bytes():
                digest.update(piece)
        assert digest.hexdigest() == added["sha256"]

        pdf = b"%PDF-1.7\n" + os.urandom(2048)
        r = await client.post(
            url,
            params={"kind": "document", "visibility": "internal"},
            content=pdf,
            headers={**SUP, "Content-Type": "application/pdf"},
        )
        assert r.status_code == 201, r.text
        internal_id = r.json()["id"]
        assert (await client.get(f"{url}/{internal_id}", headers=WEB)).status_code == 404
        listed = (await client.get(url, headers=WEB)).json()
        assert [a["id"] for a in listed["items"]] == [added["id"]]

    async def events() -> list[dict[str, object]]:
        records = await read_to_end(
            platform.infra,
            platform.topic(Topic.TICKETS),
            where=lambda r: headers_of(r).get("ce_type") == ADDED,
        )
        found = [data_of(r) for r in records]
        return found if len(found) == 2 else []

    found = await wait_until("both attachment-added events on Kafka", events)
    assert [e["attachment_id"] for e in found] == [added["id"], internal_id]
    assert found[0]["sha256"] == added["sha256"] and found[0]["size_bytes"] == len(data)
    assert all("filename" not in e and "李雷" not in str(e) for e in found)
