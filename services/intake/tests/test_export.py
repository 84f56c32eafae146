"""Intake and PIPL data exports, in-process: an export request carries the ticket ids and a one-off
public key (no personal data), intake answers for itself with its records sealed to that key, collects
the other services' sealed answers once each, and shows the assembled data to an administrator when every
expected service answered (the download is in the access log); an expired export keeps neither its key
nor its answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.intake.app import Settings, build
from aftersales.shared.contracts.privacy import ExportAnswered
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.export import ExportKeys, seal, to_json, unseal
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

REQUESTED = "aftersales.privacy.export-requested.v1"
ANSWERED = "aftersales.privacy.export-answered.v1"
ADMIN, SUP, WEB = "dev-admin-token", "dev-supervisor-token", "dev-web-token"
PHONE, EMAIL = "+8613912345678", "han.meimei@example.com"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**FAST, export_answering_services=["intake", "followup"], export_ttl_days=7)
    async with in_process(build, settings) as svc:
        yield svc


async def open_ticket(svc: ServiceUnderTest) -> tuple[str, str]:
    body = {
        "channel": "web",
        "customer": {"name": "Han Meimei", "phone": PHONE, "email": EMAIL, "region_code": "310000"},
        "product": {"device_type": "air_conditioner", "model": "KF-35", "serial": "AC-9"},
        "title": "Broken fan",
        "description": "Noisy since Monday",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["customer_id"]


def followup_answer(
    requested: CloudEvent, records: dict[str, Any], *, public_key: str | None = None
) -> CloudEvent:
    data = requested.data
    answered = ExportAnswered(
        export_id=data["export_id"],
        customer_id=data["customer_id"],
        service="followup",
        chunk=0,
        chunks=1,
        counts={k: len(v) for k, v in records.items()},
        sealed=seal(public_key or data["public_key"], to_json({"records": records})),
        answered_at=datetime.now(UTC),
    )
    return new_event(answered, source="/aftersales/followup", subject=data["customer_id"])


async def requested_export(svc: ServiceUnderTest, customer_id: str) -> tuple[str, CloudEvent]:
    r = await svc.http.post(f"/v1/customers/{customer_id}/exports", headers=svc.auth(ADMIN))
    assert r.status_code == 202, r.text
    assert r.json()["pending"] == ["intake", "followup"] and r.json()["data"] is None
    export_id = r.json()["export_id"]
    [requested] = await svc.published.wait_for(REQUESTED, lambda e: e.data["export_id"] == export_id)
    return export_id, requested


async def test_export_is_assembled_from_sealed_answers_once_everyone_answered(
    intake: ServiceUnderTest,
) -> None:
    ticket_id, customer_id = await open_ticket(intake)
    export_id, requested = await requested_export(intake, customer_id)
    assert requested.data["ticket_ids"] == [ticket_id] and requested.subject == customer_id
    assert PHONE not in str(requested.data) and EMAIL not in str(requested.data)

    await intake.deliver(requested, copies=2)  # intake answers for itself, once
    [own] = await intake.published_exactly(ANSWERED)
    assert own.data["service"] == "intake" and PHONE not in own.value().decode()
    stored = await intake.runtime.db["export_requests"].find_one({"_id": export_id})
    assert stored is not None
    opened = json.loads(unseal(stored["private_key"], own.data["sealed"]))["records"]
    assert opened["customer"][0]["phone"] == PHONE and opened["tickets"][0]["_id"] == ticket_id

    await intake.deliver(own, copies=2)
    url = f"/v1/customers/{customer_id}/exports/{export_id}"
    report = (await intake.http.get(url, headers=intake.auth(ADMIN))).json()
    assert report["pending"] == ["followup"] and report["data"] is None
    assert report["answered"]["intake"]["tickets"] == 1

    visits = {"visits": [{"_id": f"V-{ticket_id}-r1-callback", "notes": ["spoke to Wang"]}]}
    await intake.deliver(followup_answer(requested, visits), copies=2)
    report = (await intake.http.get(url, headers=intake.auth(ADMIN))).json()
    assert report["complete"] and report["pending"] == []
    assert report["data"]["intake"]["customer"][0]["email"] == EMAIL
    assert report["data"]["followup"] == visits and report["answered"]["followup"] == {"visits": 1}

    log = (
        await intake.http.get(f"/v1/customers/{customer_id}/access-log", headers=intake.auth(ADMIN))
    ).json()
    assert "GET /v1/customers/{customer_id}/exports/{export_id}" in [e["route"] for e in log["entries"]]


async def test_only_administrators_export_and_bad_ids_are_refused(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    for token in (WEB, SUP):
        r = await intake.http.post(f"/v1/customers/{customer_id}/exports", headers=intake.auth(token))
        assert r.status_code == 403, r.text
    r = await intake.http.post("/v1/customers/C-nobody/exports", headers=intake.auth(ADMIN))
    assert r.status_code == 404
    r = await intake.http.post("/v1/customers/C%20bad%24id/exports", headers=intake.auth(ADMIN))
    assert r.status_code == 422 and "customer_id" in r.text
    export_id, _ = await requested_export(intake, customer_id)
    r = await intake.http.get(f"/v1/customers/{customer_id}/exports/nope", headers=intake.auth(ADMIN))
    assert r.status_code == 422 and "export_id" in r.text
    r = await intake.http.get(f"/v1/customers/{customer_id}/exports/{export_id}", headers=intake.auth(WEB))
    assert r.status_code == 403
    r = await intake.http.get(f"/v1/customers/C-other/exports/{export_id}", headers=intake.auth(ADMIN))
    assert r.status_code == 404
    r = await intake.http.get(
        f"/v1/customers/{customer_id}/exports/EX-0123456789abcdef", headers=intake.auth(ADMIN)
    )
    assert r.status_code == 404


async def test_an_answer_not_sealed_to_the_export_key_is_refused(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    export_id, requested = await requested_export(intake, customer_id)
    forged = followup_answer(requested, {"visits": []}, public_key=ExportKeys.generate().public_key)
    await intake.deliver(forged)  # parked in the privacy topic's dead-letter topic, never collected
    assert await intake.runtime.db["export_parts"].find_one({"_id": f"{export_id}:followup:0:0"}) is None
    url = f"/v1/customers/{customer_id}/exports/{export_id}"
    assert "followup" in (await intake.http.get(url, headers=intake.auth(ADMIN))).json()["pending"]


async def test_an_expired_export_keeps_neither_key_nor_answers(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    export_id, requested = await requested_export(intake, customer_id)
    await intake.deliver(requested)
    [own] = await intake.published.wait_for(ANSWERED)
    await intake.deliver(own)
    parts = intake.runtime.db["export_parts"]
    assert await parts.find_one({"_id": f"{export_id}:intake:0:0"}) is not None
    assert await intake.fire_timers(now=datetime.now(UTC) + timedelta(days=6)) == 0
    assert await intake.fire_timers(now=datetime.now(UTC) + timedelta(days=8)) == 1
    url = f"/v1/customers/{customer_id}/exports/{export_id}"
    r = await intake.http.get(url, headers=intake.auth(ADMIN))
    assert r.status_code == 410, r.text
    assert await parts.find_one({"_id": f"{export_id}:intake:0:0"}) is None
    stored = await intake.runtime.db["export_requests"].find_one({"_id": export_id})
    assert stored is not None and "private_key" not in stored
    await intake.deliver(followup_answer(requested, {"visits": [{"_id": "V-late"}]}))  # a late answer
    assert await parts.find_one({"_id": f"{export_id}:followup:0:0"}) is None
