"""Retention (PIPL) at intake, in-process: a customer's contact data and a ticket's text are
pseudonymised once their period has passed since the last activity (the retention timer of their bucket
fires), a record touched since is kept and armed again, and the ticket's ids, status and category stay
so KPIs keep counting. Time is driven by firing the timers at a chosen `now`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from aftersales.intake.app import Settings, build
from aftersales.intake.retention import CUSTOMER_CONTACT, TICKET_TEXT, IntakeRetention
from aftersales.shared import retention
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

ADMIN, WEB = "dev-admin-token", "dev-web-token"
PHONE, EMAIL, NAME = "+8613987654321", "li.lei@example.com", "Li Lei"
DAYS = 30


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**FAST, retention_customer_contact_days=DAYS, retention_ticket_text_days=DAYS)
    async with in_process(build, settings) as svc:
        yield svc


async def open_ticket(svc: ServiceUnderTest, serial: str = "AC-1") -> tuple[str, str]:
    body = {
        "channel": "web",
        "customer": {"name": NAME, "phone": PHONE, "email": EMAIL, "region_code": "310000"},
        "product": {"device_type": "air_conditioner", "model": "KF-35", "serial": serial},
        "title": f"Broken, call me at {PHONE}",
        "description": f"Noisy. Mail {EMAIL}",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    await svc.drain_outbox()  # the ticket stream arms the ticket and its customer
    return r.json()["id"], r.json()["customer_id"]


def pseudonymised(kind: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "aftersales_retention_pseudonymised_total", {"service": "intake", "kind": kind}
        )
        or 0.0
    )


async def contact_of(svc: ServiceUnderTest, customer_id: str) -> str:
    r = await svc.http.get(f"/v1/customers/{customer_id}", headers=svc.auth(ADMIN))
    assert r.status_code == 200, r.text
    return r.text


async def test_personal_data_older_than_the_period_is_pseudonymised(intake: ServiceUnderTest) -> None:
    ticket_id, customer_id = await open_ticket(intake)
    before = pseudonymised(CUSTOMER_CONTACT), pseudonymised(TICKET_TEXT)
    now = datetime.now(UTC)
    await intake.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert PHONE in await contact_of(intake, customer_id)

    await intake.fire_timers(now=now + timedelta(days=DAYS + 2))
    contact = await contact_of(intake, customer_id)
    ticket = (await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth(ADMIN))).json()
    for text in (contact, str(ticket)):
        assert PHONE not in text and EMAIL not in text and NAME not in text
    assert ticket["id"] == ticket_id and ticket["status"] == "new" and ticket["category"]
    assert ticket["customer_id"] == customer_id
    assert (pseudonymised(CUSTOMER_CONTACT), pseudonymised(TICKET_TEXT)) == (before[0] + 1, before[1] + 1)
    assert await intake.runtime.db["timers"].count_documents({}) == 0  # nothing left to fire


async def test_a_record_touched_since_is_kept_and_armed_again(intake: ServiceUnderTest) -> None:
    ticket_id, customer_id = await open_ticket(intake)
    now = datetime.now(UTC)
    # The customer's record changes 10 days later (a path that does not arm it again): it is kept.
    touched = now + timedelta(days=10)
    await intake.runtime.db["customers"].update_one({"_id": customer_id}, {"$set": {"updated_at": touched}})
    await intake.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert PHONE in await contact_of(intake, customer_id)
    ticket = (await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth(ADMIN))).json()
    assert PHONE not in str(ticket)  # the ticket itself was not touched

    [timer] = [t async for t in intake.runtime.db["timers"].find({})]
    assert timer["due_at"] >= touched + timedelta(days=DAYS)
    await intake.fire_timers(now=touched + timedelta(days=DAYS + 2))
    assert PHONE not in await contact_of(intake, customer_id)


async def test_a_new_ticket_moves_the_customer_to_a_later_bucket(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    schedule: IntakeRetention = intake.app.state.retention
    later = datetime.now(UTC) + timedelta(days=5)
    # What the customer's next ticket does: its record is refreshed, and the ticket stream arms it.
    await intake.runtime.db["customers"].update_one({"_id": customer_id}, {"$set": {"updated_at": later}})
    await schedule.noted(customer_id, None, later)
    await intake.fire_timers(now=later + timedelta(days=DAYS - 1))
    assert PHONE in await contact_of(intake, customer_id)
    await intake.fire_timers(now=later + timedelta(days=DAYS + 2))
    assert PHONE not in await contact_of(intake, customer_id)


async def test_a_bucket_is_read_in_pages_each_with_its_timer(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "PAGE_RECORDS", 2)
    schedule: IntakeRetention = intake.app.state.retention
    at = datetime(2030, 1, 1, 12, tzinfo=UTC)
    for n in range(5):
        await schedule.schedule.arm(CUSTOMER_CONTACT, f"C-{n}", at)
    await schedule.schedule.arm(CUSTOMER_CONTACT, "C-0", at)  # armed again in the same bucket: no change
    assert await intake.runtime.db["timers"].count_documents({}) == 3
    assert await intake.fire_timers(now=at + timedelta(days=DAYS + 2)) == 3
    assert await intake.runtime.db["retention"].count_documents({}) == 0  # no such customers: dropped


def test_a_zero_period_keeps_the_data_and_periods_cannot_be_negative() -> None:
    assert retention.retention_period(0) is None
    assert retention.bucket_width(timedelta(days=1095)) == timedelta(days=1)
    assert retention.bucket_width(timedelta(seconds=4)) == timedelta(seconds=1)
    assert retention.bucket_end(datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC), timedelta(days=1)) == int(
        datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    )
    with pytest.raises(ValueError, match="retention_ticket_text_days"):
        Settings(**FAST, retention_ticket_text_days=-1)
