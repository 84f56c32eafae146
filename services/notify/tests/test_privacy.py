"""Notify and personal-data rights, in-process: an erasure removes the customer's contact points and is
confirmed once however often it is delivered; a do-not-contact customer gets no messages, staff still do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.notify.app import Settings, build
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
WEB = "dev-web-token"


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, contact_wait_rounds=0)) as svc:
        yield svc


def erasure(customer_id: str, erasure_id: str = "ER-1") -> ErasureRequested:
    return ErasureRequested(erasure_id=erasure_id, customer_id=customer_id, requested_at=datetime.now(UTC))


async def test_erasure_removes_contact_points_and_confirms_once(svc: ServiceUnderTest) -> None:
    contact = {"channels": ["email"], "email": "li@example.com", "language": "en", "do_not_disturb": None}
    r = await svc.http.put("/v1/recipients/customers/C-9", json=contact, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    event = new_event(erasure("C-9"), source="/aftersales/intake", subject="C-9")
    await svc.deliver(event, copies=2)
    await svc.deliver(event)
    [confirmed] = await svc.published_exactly(CONFIRMED)
    assert confirmed.data["service"] == "notify" and confirmed.data["counts"] == {
        "recipients": 1,
        "inbound_mails": 0,
    }
    r = await svc.http.get("/v1/recipients/customers/C-9", headers=svc.auth(WEB))
    assert r.status_code == 404
    assert await svc.app.state.notifications.recipients.find("customer:C-9") is None


async def test_erasure_of_an_unknown_customer_confirms_with_zero(svc: ServiceUnderTest) -> None:
    await svc.deliver(new_event(erasure("C-none", "ER-2"), source="/aftersales/intake", subject="C-none"))
    [confirmed] = await svc.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"recipients": 0, "inbound_mails": 0}


async def test_do_not_contact_customer_gets_no_message(svc: ServiceUnderTest) -> None:
    contact = {"channels": ["email"], "email": "wang@example.com", "language": "en", "do_not_disturb": None}
    await svc.http.put("/v1/recipients/customers/C-7", json=contact, headers=svc.auth(WEB))
    await svc.http.put("/v1/recipients/customers/C-8", json=contact, headers=svc.auth(WEB))
    changed = ContactPreferencesChanged(customer_id="C-7", do_not_contact=True, changed_at=datetime.now(UTC))
    await svc.deliver(new_event(changed, source="/aftersales/intake", subject="C-7"))
    await svc.deliver(ticket_created("T-7", customer_id="C-7"))
    await svc.deliver(ticket_created("T-8", customer_id="C-8"))
    r = await svc.http.get("/v1/deliveries", params={"ticket_id": "T-7"}, headers=svc.auth("dev-admin-token"))
    assert r.status_code == 200 and r.json()["items"] == [], r.text
    r = await svc.http.get("/v1/deliveries", params={"ticket_id": "T-8"}, headers=svc.auth("dev-admin-token"))
    assert r.status_code == 200 and r.json()["count"] == 1, r.text  # another customer is still told
