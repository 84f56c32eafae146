"""Follow-up and personal-data rights, in-process: a do-not-contact customer gets no visits, one who
withdrew consent to care calls no care visit; an erasure removes the notes of the customer's visits
(found by `_id` from the ticket ids and the care counter) and is confirmed once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from aftersales.followup.app import Settings, build
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureRequested
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SCHEDULED = "aftersales.followup.scheduled.v1"
CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
DESK = "dev-supervisor-token"
AROUND_THE_CLOCK: dict[str, Any] = {
    "do_not_disturb_start": time(0, 0),
    "do_not_disturb_end": time(0, 0),
    "business_hours_open": time(0, 0),
    "business_hours_close": time(23, 59, 59, 999999),
    "business_days": frozenset(range(7)),
}


@pytest.fixture
async def followup() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, **AROUND_THE_CLOCK, callback_delay_s=0)) as svc:
        yield svc


def key_account_ticket(ticket_id: str, customer_id: str) -> CloudEvent:
    return ticket_created(
        ticket_id, customer_id=customer_id, priority=Priority.P2, customer_tier=CustomerTier.KEY_ACCOUNT
    )


def preferences(customer_id: str, **fields: bool) -> CloudEvent:
    changed = ContactPreferencesChanged(customer_id=customer_id, changed_at=datetime.now(UTC), **fields)
    return new_event(changed, source="/aftersales/intake", subject=customer_id)


async def kinds(svc: ServiceUnderTest, ticket_id: str) -> set[str]:
    r = await svc.http.get("/v1/visits", params={"ticket_id": ticket_id}, headers=svc.auth(DESK))
    return {v["kind"] for v in r.json()["items"]}


async def test_do_not_contact_and_withdrawn_care_consent_are_respected(followup: ServiceUnderTest) -> None:
    await followup.deliver(preferences("C-quiet", do_not_contact=True))
    await followup.deliver(preferences("C-nocare", do_not_contact=False, care_calls=False))
    for ticket_id, customer_id in (("T-q", "C-quiet"), ("T-n", "C-nocare"), ("T-ok", "C-ok")):
        await followup.deliver(key_account_ticket(ticket_id, customer_id))
        await followup.deliver(work_order_resolved(ticket_id))
    await followup.published.wait_for(SCHEDULED, count=5)
    assert await kinds(followup, "T-q") == set()
    assert await kinds(followup, "T-n") == {"callback", "on_site"}
    assert await kinds(followup, "T-ok") == {"callback", "on_site", "care"}


async def test_erasure_removes_visit_notes_and_confirms_once(followup: ServiceUnderTest) -> None:
    await followup.deliver(key_account_ticket("T-e", "C-e"))
    await followup.deliver(work_order_resolved("T-e"))
    await followup.published.wait_for(SCHEDULED, count=3)
    await followup.fire_timers(now=datetime.now(UTC) + timedelta(minutes=1))
    r = await followup.http.get("/v1/visits", params={"ticket_id": "T-e"}, headers=followup.auth(DESK))
    for visit in r.json()["items"]:
        body = {"outcome": "unreachable", "note": "spoke to her husband Wang at Lane 5"}
        r = await followup.http.post(
            f"/v1/visits/{visit['id']}/outcome", json=body, headers=followup.auth(DESK)
        )
        assert r.status_code == 200, r.text
    request = ErasureRequested(
        erasure_id="ER-1", customer_id="C-e", ticket_ids=["T-e", "T-unknown"], requested_at=datetime.now(UTC)
    )
    event = new_event(request, source="/aftersales/intake", subject="C-e")
    await followup.deliver(event, copies=2)
    [confirmed] = await followup.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"visit_notes": 3} and confirmed.data["service"] == "followup"
    r = await followup.http.get("/v1/visits", params={"ticket_id": "T-e"}, headers=followup.auth(DESK))
    for visit in r.json()["items"]:
        detail = (await followup.http.get(f"/v1/visits/{visit['id']}", headers=followup.auth(DESK))).text
        assert "Wang" not in detail
