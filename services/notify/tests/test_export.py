"""Notify and PIPL data exports, in-process: the customer's contact points are answered sealed to the
export's key (no e-mail address in plaintext on the topic), once; an unknown customer gets an empty
answer, so the export still completes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.notify.app import Settings, build
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.export import ExportKeys, unseal
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

ANSWERED = "aftersales.privacy.export-answered.v1"
WEB = "dev-web-token"
EMAIL = "li@example.com"


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, contact_wait_rounds=0)) as svc:
        yield svc


def export(export_id: str, customer_id: str, keys: ExportKeys) -> CloudEvent:
    request = ExportRequested(
        export_id=export_id,
        customer_id=customer_id,
        public_key=keys.public_key,
        requested_at=datetime.now(UTC),
    )
    return new_event(request, source="/aftersales/intake", subject=customer_id)


async def test_export_answers_contact_points_sealed_and_once(svc: ServiceUnderTest) -> None:
    contact = {"channels": ["email"], "email": EMAIL, "language": "en", "do_not_disturb": None}
    r = await svc.http.put("/v1/recipients/customers/C-9", json=contact, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    keys = ExportKeys.generate()
    await svc.deliver(export("EX-1", "C-9", keys), copies=2)
    await svc.deliver(export("EX-2", "C-none", keys))
    [answered] = await svc.published_exactly(ANSWERED, where=lambda e: e.data["export_id"] == "EX-1")
    assert answered.data["service"] == "notify" and answered.data["counts"] == {"recipients": 1}
    assert EMAIL not in answered.value().decode()
    [recipient] = json.loads(unseal(keys.private_key, answered.data["sealed"]))["records"]["recipients"]
    assert recipient["email"] == EMAIL
    [empty] = await svc.published_exactly(ANSWERED, where=lambda e: e.data["export_id"] == "EX-2")
    assert empty.data["counts"] == {"recipients": 0}
