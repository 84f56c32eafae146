"""Retention (PIPL) in fieldwork, in-process: where the customer was met and the work notes, the
customer's signature and the photos uploaded to a report are removed once their record has not changed
for the period (the retention timer of their bucket fires); a record changed since is kept and armed
again; ids, states, times and the reports' content hashes stay. Time is driven by firing the timers at
a chosen `now`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.retention import APPOINTMENT_POINTS, REPORT_PHOTOS, REPORT_SIGNATURE
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_assigned

TOKENS = {
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "t1": {"subject": "t1", "scopes": ["technician"]},
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff" + b"\x07" * 3000
SIGNER, NOTE = "李雷", "met 李雷 at Lane 5"
DAYS = 30
KINDS = (APPOINTMENT_POINTS, REPORT_SIGNATURE, REPORT_PHOTOS)


def settings(days: float = DAYS) -> Settings:
    periods = {f"retention_{kind}_days": days for kind in ("appointment_points", "report_signature")}
    return Settings(
        **{**FAST, "api_tokens": json.dumps(TOKENS)}, **periods, retention_report_photos_days=days
    )


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, settings()) as running:
        yield running


def as_(who: str, content_type: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {who}"}
    return {**headers, "Content-Type": content_type} if content_type else headers


async def post(svc: ServiceUnderTest, url: str, **kwargs: Any) -> dict[str, Any]:
    r = await svc.http.post(url, headers=kwargs.pop("headers", as_("t1")), **kwargs)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def visited(svc: ServiceUnderTest, ticket_id: str) -> tuple[str, str, str]:
    """A visit checked in and out, and its report with a photo, signed: (appointment, report, photo)."""
    await svc.deliver(ticket_created(ticket_id, submitted_by="http:web-portal"))
    await svc.deliver(work_order_assigned(ticket_id, technician_id="t1", grid_id="xuhui"))
    start = datetime.now(UTC) + timedelta(hours=2)
    window = {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=2)).isoformat()}
    appointment = await post(svc, "/v1/appointments", json={"ticket_id": ticket_id, **window})
    url = f"/v1/appointments/{appointment['id']}"
    await post(svc, f"{url}/check-in", json={"location": {"lat": 31.19, "lon": 121.43}})
    await post(svc, f"{url}/check-out", json={"work_done": NOTE})
    body = {"ticket_id": ticket_id, "work_performed": "replaced the fan", "resolution_code": "replaced_part"}
    report = await post(svc, "/v1/reports", json=body)
    url = f"/v1/reports/{report['id']}"
    photo = await post(svc, f"{url}/photos", content=JPEG, headers=as_("t1", "image/jpeg"))
    signature = {"signer_name": SIGNER, "png_base64": base64.b64encode(PNG).decode()}
    await post(svc, f"{url}/sign", json=signature)
    return str(appointment["id"]), str(report["id"]), str(photo["photo_id"])


async def read(svc: ServiceUnderTest, collection: str, record_id: str) -> dict[str, Any]:
    doc = await svc.runtime.db[collection].find_one({"_id": record_id})
    assert doc is not None
    return dict(doc)


async def photo_status(svc: ServiceUnderTest, report_id: str, photo_id: str) -> int:
    r = await svc.http.get(f"/v1/reports/{report_id}/photos/{photo_id}", headers=as_("sup"))
    return r.status_code


def pseudonymised(kind: str) -> float:
    labels = {"service": "fieldwork", "kind": kind}
    return REGISTRY.get_sample_value("aftersales_retention_pseudonymised_total", labels) or 0.0


async def test_personal_data_older_than_the_period_is_removed(svc: ServiceUnderTest) -> None:
    appointment_id, report_id, photo_id = await visited(svc, "T-r1")
    before = [pseudonymised(kind) for kind in KINDS]
    now = datetime.now(UTC)
    await svc.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert NOTE in str(await read(svc, "appointments", appointment_id))
    assert await photo_status(svc, report_id, photo_id) == 200

    await svc.fire_timers(now=now + timedelta(days=DAYS + 2))
    met, report = await read(svc, "appointments", appointment_id), await read(svc, "reports", report_id)
    assert SIGNER not in str(met) and SIGNER not in str(report)
    assert met["check_in_point"] is None and met["check_out_point"] is None and met["status"] == "completed"
    assert report["signature"]["data"] == "" and report["status"] == "signed" and report["content_sha256"]
    assert [p["photo_id"] for p in report["photo_files"]] == [photo_id]  # the hash the signature covers
    assert await photo_status(svc, report_id, photo_id) == 410
    assert await svc.runtime.db["report_photos"].count_documents({}) == 0  # the bytes are gone
    assert [pseudonymised(kind) for kind in KINDS] == [n + 1 for n in before]
    assert await svc.runtime.db["timers"].count_documents({"kind": "retention"}) == 0


async def test_a_record_changed_since_is_kept_and_armed_again(svc: ServiceUnderTest) -> None:
    appointment_id, report_id, photo_id = await visited(svc, "T-r2")
    now = datetime.now(UTC)
    touched = now + timedelta(days=10)  # a change that did not arm it again
    await svc.runtime.db["reports"].update_one({"_id": report_id}, {"$set": {"updated_at": touched}})
    await svc.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert NOTE not in str(await read(svc, "appointments", appointment_id))
    assert SIGNER in str(await read(svc, "reports", report_id))
    assert await photo_status(svc, report_id, photo_id) == 200

    await svc.fire_timers(now=touched + timedelta(days=DAYS + 2))
    assert SIGNER not in str(await read(svc, "reports", report_id))
    assert await photo_status(svc, report_id, photo_id) == 410


async def test_a_draft_loses_its_photos_and_can_take_new_ones(svc: ServiceUnderTest) -> None:
    await svc.deliver(ticket_created("T-r3", submitted_by="http:web-portal"))
    await svc.deliver(work_order_assigned("T-r3", technician_id="t1", grid_id="xuhui"))
    body = {"ticket_id": "T-r3", "work_performed": "replaced the fan", "resolution_code": "replaced_part"}
    report = await post(svc, "/v1/reports", json=body)
    url = f"/v1/reports/{report['id']}/photos"
    await post(svc, url, content=JPEG, headers=as_("t1", "image/jpeg"))
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=DAYS + 2))
    draft = await read(svc, "reports", report["id"])
    assert draft["photo_files"] == [] and draft["status"] == "draft" and "photos_erased_at" not in draft
    assert await svc.runtime.db["report_photos"].count_documents({}) == 0
    await post(svc, url, content=JPEG, headers=as_("t1", "image/jpeg"))  # the draft goes on
    assert len((await read(svc, "reports", report["id"]))["photo_files"]) == 1


async def test_a_zero_period_keeps_the_data_and_periods_cannot_be_negative() -> None:
    async with in_process(build, settings(days=0)) as svc:
        appointment_id, report_id, photo_id = await visited(svc, "T-r4")
        await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=20 * 365))
        assert NOTE in str(await read(svc, "appointments", appointment_id))
        assert SIGNER in str(await read(svc, "reports", report_id))
        assert await photo_status(svc, report_id, photo_id) == 200
        assert await svc.runtime.db["retention_buckets"].count_documents({}) == 0
    with pytest.raises(ValueError, match="retention_report_photos_days"):
        Settings(**FAST, retention_report_photos_days=-1)
