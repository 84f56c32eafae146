"""Photos uploaded to service reports: stored in chunks by their SHA-256, deduplicated, bounded in size,
type and number, locked at signing, and checked again from the stored bytes at verification."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.reports import MAX_PHOTOS
from aftersales.fieldwork.service import ReportBook
from aftersales.fieldwork.store import PHOTO_CHUNK_BYTES
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_assigned

TOKENS = {
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "t1": {"subject": "t1", "scopes": ["technician"]},
    "t2": {"subject": "t2", "scopes": ["technician"]},
    "web": {"subject": "web-portal", "scopes": ["channel"], "channel": "web"},
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MAX_BYTES = 600 * 1024  # three chunks at most


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**{**FAST, "api_tokens": json.dumps(TOKENS), "report_photo_max_bytes": MAX_BYTES})
    async with in_process(build, settings) as running:
        yield running


def as_(who: str, content_type: str | None = "image/jpeg") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {who}"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


async def draft(svc: ServiceUnderTest, ticket_id: str = "T-1") -> str:
    await svc.deliver(ticket_created(ticket_id, submitted_by="http:web-portal"))
    await svc.deliver(work_order_assigned(ticket_id, technician_id="t1", grid_id="xuhui"))
    body = {"ticket_id": ticket_id, "work_performed": "replaced the fan", "resolution_code": "replaced_part"}
    r = await svc.http.post("/v1/reports", json=body, headers=as_("t1", None))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def image(n: int, size: int = 1000) -> bytes:
    return (b"\xff\xd8\xff" + n.to_bytes(4, "big")) * (size // 7)


async def test_upload_dedupe_read_back_and_chunks(svc: ServiceUnderTest) -> None:
    report_id = await draft(svc)
    data = image(1, 2 * PHOTO_CHUNK_BYTES + 10)  # three chunks
    r = await svc.http.post(f"/v1/reports/{report_id}/photos", content=data, headers=as_("t1"))
    assert r.status_code == 201, r.text
    photo = r.json()
    assert photo["sha256"] == hashlib.sha256(data).hexdigest() and photo["size"] == len(data)
    assert photo["content_type"] == "image/jpeg"
    r = await svc.http.post(f"/v1/reports/{report_id}/photos", content=data, headers=as_("sup"))
    assert r.status_code == 200 and r.json() == photo  # the same bytes: the entry held
    report = (await svc.http.get(f"/v1/reports/{report_id}", headers=as_("web", None))).json()
    assert report["photo_files"] == [photo]

    book: ReportBook = svc.app.state.reports
    ids = [doc["_id"] async for doc in book.photos.collection.find({}, {"_id": 1})]
    assert sorted(ids) == [f"{photo['photo_id']}:{n}" for n in range(3)]
    url = f"/v1/reports/{report_id}/photos/{photo['photo_id']}"
    r = await svc.http.get(url, headers=as_("web", None))  # the ticket's channel sees it
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "image/jpeg"
    assert (await svc.http.get(url, headers=as_("t2", None))).status_code == 404  # not t2's work
    missing = f"/v1/reports/{report_id}/photos/P-{'0' * 64}"
    assert (await svc.http.get(missing, headers=as_("t1", None))).status_code == 404


async def test_limits_type_size_count_and_who(svc: ServiceUnderTest) -> None:
    report_id = await draft(svc)
    url = f"/v1/reports/{report_id}/photos"
    r = await svc.http.post(url, content=b"GIF89a", headers=as_("t1", "image/gif"))
    assert r.status_code == 415 and r.json()["field"] == "content_type"
    r = await svc.http.post(url, content=image(2, MAX_BYTES + 7), headers=as_("t1"))
    assert r.status_code == 413 and r.json()["field"] == "photo"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the running count refuses it
        yield PNG
        for _ in range(4):
            yield b"\x00" * (200 * 1024)

    r = await svc.http.post(url, content=chunked(), headers=as_("t1", "image/png"))
    assert r.status_code == 413 and r.json()["field"] == "photo"
    r = await svc.http.post(url, content=b"", headers=as_("t1"))
    assert r.status_code == 422 and r.json()["field"] == "photo"
    r = await svc.http.post(url, content=image(1, 70), headers=as_("t1", "image/png"))  # JPEG bytes
    assert r.status_code == 415 and r.json()["field"] == "photo"
    assert (await svc.http.post(url, content=PNG, headers=as_("web", "image/png"))).status_code == 403
    assert (await svc.http.post(url, content=PNG, headers=as_("t2", "image/png"))).status_code in (403, 404)

    for n in range(MAX_PHOTOS):
        r = await svc.http.post(url, content=image(n, 70), headers=as_("t1", "image/jpeg"))
        assert r.status_code == 201, r.text
    r = await svc.http.post(url, content=image(99, 70), headers=as_("t1"))
    assert r.status_code == 422 and r.json()["field"] == "photos"
    r = await svc.http.post(url, content=image(0, 70), headers=as_("t1", "image/jpeg"))
    assert r.status_code == 200  # a retry of a photo held is still answered


async def test_signing_locks_photos_and_verification_rechecks_the_stored_bytes(svc: ServiceUnderTest) -> None:
    report_id = await draft(svc)
    url = f"/v1/reports/{report_id}/photos"
    data = image(5, PHOTO_CHUNK_BYTES + 100)
    photo = (await svc.http.post(url, content=data, headers=as_("t1"))).json()
    signature = {"signer_name": "李雷", "png_base64": base64.b64encode(PNG).decode()}
    r = await svc.http.post(f"/v1/reports/{report_id}/sign", json=signature, headers=as_("t1", None))
    assert r.status_code == 200, r.text
    r = await svc.http.post(url, content=image(6), headers=as_("t1"))
    assert r.status_code == 409
    check = f"/v1/reports/{report_id}/verification"
    assert (await svc.http.get(check, headers=as_("web", None))).json()["matches"] is True

    book: ReportBook = svc.app.state.reports
    chunk = f"{photo['photo_id']}:1"
    tampered = b"\x00" + data[PHOTO_CHUNK_BYTES + 1 :]
    await book.photos.collection.update_one({"_id": chunk}, {"$set": {"data": tampered}})
    result = (await svc.http.get(check, headers=as_("web", None))).json()
    assert result["matches"] is False and result["stored_sha256"] != result["computed_sha256"]

    await book.photos.collection.delete_one({"_id": chunk})  # a missing chunk does not match either
    assert (await svc.http.get(check, headers=as_("web", None))).json()["matches"] is False


def test_the_signature_covers_uploaded_photos_by_their_hash() -> None:
    from datetime import UTC, datetime

    from aftersales.fieldwork import reports

    report = reports.ServiceReport("R-1", "T-1", "t1", work_performed="x", resolution_code="fixed")
    photo = reports.PhotoFile(reports.photo_id_of("a" * 64), "a" * 64, "image/png", 10)
    signed = reports.sign(
        reports.add_photo(report, photo), reports.png_signature(PNG, "李雷"), datetime.now(UTC)
    ).state
    assert reports.canonical_content(signed)["photo_files"] == [photo.as_dict()]
    assert "photo_files" not in reports.canonical_content(report)  # reports without uploads hash as before
    assert reports.verify(signed, {photo.photo_id: "a" * 64}).matches
    assert not reports.verify(signed, {photo.photo_id: "b" * 64}).matches
    assert not reports.verify(signed, {photo.photo_id: None}).matches
