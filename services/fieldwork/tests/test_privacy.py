"""Fieldwork and personal-data rights, in-process: an erasure removes the customer's signature, where the
technician met the customer, the work notes and the bytes of the reports' photos from the documents of
its tickets, and is confirmed once (with zero counts for a customer fieldwork never saw)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.fieldwork import reports
from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.reports import ServiceReport
from aftersales.fieldwork.store import PHOTO_CHUNK_BYTES
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, work_order_assigned

CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
PNG = reports.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x01" * 40


@pytest.fixture
async def fieldwork() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


def erasure(erasure_id: str, customer_id: str, ticket_ids: list[str]) -> CloudEvent:
    request = ErasureRequested(
        erasure_id=erasure_id, customer_id=customer_id, ticket_ids=ticket_ids, requested_at=datetime.now(UTC)
    )
    return new_event(request, source="/aftersales/intake", subject=customer_id)


async def test_erasure_removes_signatures_and_where_the_customer_was_met(fieldwork: ServiceUnderTest) -> None:
    now = datetime.now(UTC)
    draft = ServiceReport("R-1", "T-1", "t1", work_performed="fixed", resolution_code="replaced_part")
    signed = reports.sign(draft, reports.png_signature(PNG, "李雷"), now).state
    await fieldwork.app.state.reports.reports.create(signed)
    appointment = {
        "_id": "A-1",
        "ticket_id": "T-1",
        "check_in_point": {"lat": 31.2, "lon": 121.5},
        "work_done": "met 李雷 at home",
        "version": 1,
    }
    await fieldwork.runtime.db["appointments"].insert_one(appointment)
    await fieldwork.deliver(erasure("ER-1", "C-1", ["T-1"]), copies=2)
    [confirmed] = await fieldwork.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"appointments": 1, "signatures": 1, "report_photos": 0}
    report = await fieldwork.runtime.db["reports"].find_one({"_id": "R-1"})
    met = await fieldwork.runtime.db["appointments"].find_one({"_id": "A-1"})
    assert "李雷" not in str(report) and "李雷" not in str(met) and met is not None
    assert met["check_in_point"] is None and report is not None and report["signature"]["data"] == ""


async def test_erasure_of_a_customer_never_seen_confirms_with_zero_counts(
    fieldwork: ServiceUnderTest,
) -> None:
    await fieldwork.deliver(erasure("ER-2", "C-2", []))
    [confirmed] = await fieldwork.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"appointments": 0, "signatures": 0, "report_photos": 0}


async def test_erasure_deletes_the_photos_of_the_customers_reports(fieldwork: ServiceUnderTest) -> None:
    signed_id, draft_id = await signed_and_draft_with_photos(fieldwork, "T-3")
    others = await signed_and_draft_with_photos(fieldwork, "T-4", seed=b"\x02")  # another customer's
    chunks = fieldwork.runtime.db["report_photos"]
    assert await chunks.count_documents({}) == 8  # 2 chunks x 4 photos
    await fieldwork.deliver(erasure("ER-3", "C-3", ["T-3"]), copies=2)
    [confirmed] = await fieldwork.published_exactly(CONFIRMED, where=lambda e: e.subject == "C-3")
    assert confirmed.data["counts"]["report_photos"] == 2

    left = {doc["_id"].split(":")[0] async for doc in chunks.find({}, {"_id": 1})}
    kept = [await fieldwork.app.state.reports.reports.load(report_id) for report_id in others]
    assert left == {p.photo_id for r in kept for p in r.photo_files}  # only T-4's bytes stay
    signed = await fieldwork.app.state.reports.reports.load(signed_id)
    draft = await fieldwork.app.state.reports.reports.load(draft_id)
    assert signed.photos_erased_at is not None and len(signed.photo_files) == 1  # its hash stays
    assert draft.photo_files == () and draft.photos_erased_at is None  # as if never uploaded
    url = f"/v1/reports/{signed_id}/photos/{signed.photo_files[0].photo_id}"
    r = await fieldwork.http.get(url, headers=fieldwork.auth("dev-admin-token"))
    assert r.status_code == 410 and r.json()["field"] == "photo_id"


async def signed_and_draft_with_photos(
    svc: ServiceUnderTest, ticket_id: str, seed: bytes = b"\x01"
) -> tuple[str, str]:
    """A signed report and a draft of the ticket, each with an uploaded photo of two chunks."""
    await svc.deliver(work_order_assigned(ticket_id, technician_id="t1", grid_id="xuhui"))
    book = svc.app.state.reports
    ids = []
    for n, sign in enumerate((True, False)):
        report = ServiceReport(f"R-{ticket_id}-{n}", ticket_id, "t1", work_performed="x", resolution_code="y")
        data = b"\xff\xd8\xff" + seed * (PHOTO_CHUNK_BYTES + n + 1)

        async def body(data: bytes = data) -> AsyncIterator[bytes]:
            yield data

        upload = await book.photos.receive(f"U-{ticket_id}-{n}", body(), "image/jpeg", 10 * PHOTO_CHUNK_BYTES)
        sha = upload.sha256
        photo = reports.PhotoFile(reports.photo_id_of(sha), sha, "image/jpeg", upload.size)
        await book.photos.keep(upload, photo.photo_id)
        report = reports.add_photo(report, photo)
        if sign:
            report = reports.sign(report, reports.png_signature(PNG, "李雷"), datetime.now(UTC)).state
        await book.reports.create(report)
        ids.append(report.id)
    return ids[0], ids[1]
