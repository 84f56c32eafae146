"""Intake and personal-data rights (PIPL), in-process: an erasure request names the customer's tickets
(ids only) in its events, intake erases its own copy and confirms, and the report completes when every
expected service confirmed; consent and do-not-contact go out as an id-only event; reads of a
customer's contact data are in the access log, for administrators only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.intake.app import Settings, build
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.privacy import ErasureConfirmed
from aftersales.shared.contracts.requests import CustomerIn, ProductIn, TicketRequest
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

REQUESTED = "aftersales.privacy.erasure-requested.v1"
CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
PREFERENCES = "aftersales.privacy.contact-preferences-changed.v1"
CREATED = "aftersales.ticket.created.v1"
ADMIN, SUP, WEB = "dev-admin-token", "dev-supervisor-token", "dev-web-token"
PHONE, EMAIL = "+8613912345678", "han.meimei@example.com"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**FAST, erasure_confirming_services=["intake", "followup"])
    async with in_process(build, settings) as svc:
        yield svc


async def open_ticket(svc: ServiceUnderTest) -> tuple[str, str]:
    body = {
        "channel": "web",
        "customer": {"name": "Han Meimei", "phone": PHONE, "email": EMAIL, "region_code": "310000"},
        "product": {"device_type": "air_conditioner", "model": "KF-35", "serial": "AC-9"},
        "title": f"Broken, call me at {PHONE}",
        "description": f"Noisy. Mail {EMAIL}",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    r = await svc.http.get(f"/v1/tickets/{r.json()['id']}", headers=svc.auth(ADMIN))
    return r.json()["id"], r.json()["customer_id"]


async def test_erasure_report_completes_and_no_contact_data_is_left(intake: ServiceUnderTest) -> None:
    ticket_id, customer_id = await open_ticket(intake)
    r = await intake.http.post(f"/v1/customers/{customer_id}/erasure", headers=intake.auth(SUP))
    assert r.status_code == 403
    r = await intake.http.post(f"/v1/customers/{customer_id}/erasure", headers=intake.auth(ADMIN))
    assert r.status_code == 202, r.text
    erasure_id = r.json()["erasure_id"]
    [requested] = await intake.published.wait_for(REQUESTED)
    assert requested.data["ticket_ids"] == [ticket_id] and requested.subject == customer_id
    assert PHONE not in str(requested.data) and EMAIL not in str(requested.data)
    await intake.deliver(requested)  # intake erases its own copy and confirms (once)
    await intake.published.wait_for(CONFIRMED)
    for confirmed in intake.published.of_type(CONFIRMED):
        await intake.deliver(confirmed, copies=2)
    report = (await intake.http.get(f"/v1/erasures/{erasure_id}", headers=intake.auth(ADMIN))).json()
    assert report["pending"] == ["followup"] and report["confirmed"]["intake"] == {
        "customers": 1,
        "tickets": 1,
    }
    followup = ErasureConfirmed(
        erasure_id=erasure_id, customer_id=customer_id, service="followup", confirmed_at=datetime.now(UTC)
    )
    await intake.deliver(new_event(followup, source="/aftersales/followup", subject=customer_id))
    report = (await intake.http.get(f"/v1/erasures/{erasure_id}", headers=intake.auth(ADMIN))).json()
    assert report["complete"] and report["pending"] == []
    customer = (await intake.http.get(f"/v1/customers/{customer_id}", headers=intake.auth(ADMIN))).text
    ticket = (await intake.http.get(f"/v1/tickets/{ticket_id}", headers=intake.auth(ADMIN))).text
    for text in (customer, ticket):
        assert PHONE not in text and EMAIL not in text and "Han Meimei" not in text


async def test_an_unknown_erasure_is_404(intake: ServiceUnderTest) -> None:
    r = await intake.http.get("/v1/erasures/ER-nope", headers=intake.auth(ADMIN))
    assert r.status_code == 404


async def test_preferences_go_out_as_an_id_only_event(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    body = {"do_not_contact": True, "marketing": {"granted": False, "channel": "phone"}}
    r = await intake.http.put(
        f"/v1/customers/{customer_id}/contact-preferences", json=body, headers=intake.auth(SUP)
    )
    assert r.status_code == 200, r.text
    [changed] = await intake.published.wait_for(PREFERENCES)
    assert changed.data["do_not_contact"] is True and changed.data["marketing"] is False
    assert changed.data["customer_id"] == customer_id and PHONE not in str(changed.data)
    r = await intake.http.get(f"/v1/customers/{customer_id}/contact-preferences", headers=intake.auth(SUP))
    assert r.json()["consents"]["marketing"]["channel"] == "phone"
    r = await intake.http.put(
        f"/v1/customers/{customer_id}/contact-preferences",
        json={"do_not_contact": "maybe"},
        headers=intake.auth(SUP),
    )
    assert r.status_code == 422 and "do_not_contact" in r.text


async def test_reads_of_contact_data_are_in_the_access_log(intake: ServiceUnderTest) -> None:
    _, customer_id = await open_ticket(intake)
    for token in (ADMIN, SUP):
        assert (
            await intake.http.get(f"/v1/customers/{customer_id}", headers=intake.auth(token))
        ).status_code == 200
    r = await intake.http.get(f"/v1/customers/{customer_id}/access-log", headers=intake.auth(SUP))
    assert r.status_code == 403
    r = await intake.http.get(f"/v1/customers/{customer_id}/access-log", headers=intake.auth(ADMIN))
    log = r.json()
    assert [e["by"] for e in log["entries"]] == ["admin", "supervisor-1"], log
    assert log["entries"][0]["route"] == "GET /v1/customers/{customer_id}"


async def test_erasure_names_the_mails_the_customers_tickets_were_opened_from(
    intake: ServiceUnderTest,
) -> None:
    mailed = TicketRequest(
        channel=Channel.EMAIL,
        customer=CustomerIn(name="Han Meimei", email=EMAIL, region_code="310000"),
        product=ProductIn(device_type="unknown"),
        title="Air conditioner broken",
        description="It stopped cooling.",
        external_ref="mail:0123abcd",
        idempotency_key="0123abcd",
    )
    await intake.deliver(new_event(mailed, source="/aftersales/notify", subject="0123abcd"))
    await intake.published.wait_for(CREATED)
    web_ticket, customer_id = await open_ticket(intake)  # the same customer, by phone and e-mail
    r = await intake.http.post(f"/v1/customers/{customer_id}/erasure", headers=intake.auth(ADMIN))
    assert r.status_code == 202, r.text
    [requested] = await intake.published.wait_for(REQUESTED)
    assert len(requested.data["ticket_ids"]) == 2 and web_ticket in requested.data["ticket_ids"]
    assert requested.data["mail_ids"] == ["0123abcd"]  # ids only: the web ticket names no mail
    assert EMAIL not in str(requested.data)
