"""Retention (PIPL) in notify, in-process: a customer's contact points are forgotten once they have not
been registered again for the period (the retention timer of their bucket fires), contact points
registered again are kept and armed again, staff recipients are not touched, and the deliveries (ids and
statuses) stay so KPIs keep counting. Time is driven by firing the timers at a chosen `now`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from aftersales.notify.app import Settings, build
from aftersales.notify.retention import RECIPIENT_CONTACT
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

WEB, ADMIN = "dev-web-token", "dev-admin-token"
EMAIL = "li.lei@example.com"
DAYS = 30


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, retention_recipient_contact_days=DAYS)) as running:
        yield running


async def register(svc: ServiceUnderTest, customer_id: str) -> None:
    contact = {"channels": ["email"], "email": EMAIL, "language": "en", "do_not_disturb": None}
    r = await svc.http.put(f"/v1/recipients/customers/{customer_id}", json=contact, headers=svc.auth(WEB))
    assert r.status_code in (200, 201), r.text


async def contact_of(svc: ServiceUnderTest, customer_id: str) -> int:
    r = await svc.http.get(f"/v1/recipients/customers/{customer_id}", headers=svc.auth(WEB))
    return r.status_code


def pseudonymised() -> float:
    labels = {"service": "notify", "kind": RECIPIENT_CONTACT}
    return REGISTRY.get_sample_value("aftersales_retention_pseudonymised_total", labels) or 0.0


async def test_contact_points_older_than_the_period_are_forgotten(svc: ServiceUnderTest) -> None:
    await register(svc, "C-r1")
    staff = {"channels": ["email"], "email": "tech@example.com"}
    r = await svc.http.put("/v1/recipients/staff/t1", json=staff, headers=svc.auth(ADMIN))
    assert r.status_code == 201, r.text
    await svc.deliver(ticket_created("T-r1", customer_id="C-r1"))  # a message is planned for them
    before = pseudonymised()
    now = datetime.now(UTC)
    await svc.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert await contact_of(svc, "C-r1") == 200

    await svc.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert await contact_of(svc, "C-r1") == 404
    assert pseudonymised() == before + 1
    assert (await svc.http.get("/v1/recipients/staff/t1", headers=svc.auth(ADMIN))).status_code == 200
    r = await svc.http.get("/v1/deliveries", params={"ticket_id": "T-r1"}, headers=svc.auth(ADMIN))
    assert r.status_code == 200 and len(r.json()["items"]) == 1  # the delivery record stays
    assert EMAIL not in r.text


async def test_contact_points_registered_again_are_kept_and_armed_again(svc: ServiceUnderTest) -> None:
    await register(svc, "C-r2")
    now = datetime.now(UTC)
    touched = now + timedelta(days=10)  # registered again (here: its time moved without arming it)
    recipients = svc.runtime.db["recipients"]
    await recipients.update_one({"_id": "customer:C-r2"}, {"$set": {"updated_at": touched}})
    await svc.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert await contact_of(svc, "C-r2") == 200
    await svc.fire_timers(now=touched + timedelta(days=DAYS + 2))
    assert await contact_of(svc, "C-r2") == 404


async def test_a_zero_period_keeps_contact_points_and_periods_cannot_be_negative() -> None:
    async with in_process(build, Settings(**FAST, retention_recipient_contact_days=0)) as svc:
        await register(svc, "C-r3")
        await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=20 * 365))
        assert await contact_of(svc, "C-r3") == 200
        assert await svc.runtime.db["retention_buckets"].count_documents({}) == 0
    with pytest.raises(ValueError, match="retention_recipient_contact_days"):
        Settings(**FAST, retention_recipient_contact_days=-1)
