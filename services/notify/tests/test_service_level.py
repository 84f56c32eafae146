"""Notify in-process (FastStream's TestKafkaBroker, in-memory MongoDB, a recording channel): an event
becomes one message per recipient and channel however often it is delivered, a transient failure is
retried by a timer, quiet hours defer a customer's message, the survey mail carries feedback's signed link,
and the API checks who may do what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.notify.app import Settings, build
from aftersales.notify.domain import ChannelName
from aftersales.notify.service import Notifications
from aftersales.notify.testing import RecordingChannel
from aftersales.shared.contracts.events import SurveySent
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    contract_event,
    in_process,
    ticket_created,
    work_order_assigned,
)

SENT = "aftersales.notification.sent.v1"
FAILED = "aftersales.notification.failed.v1"
WEB, PHONE = "dev-web-token", "dev-phone-token"


@pytest.fixture
async def notify() -> AsyncIterator[tuple[ServiceUnderTest, RecordingChannel]]:
    async with in_process(build, Settings(**FAST, delivery_backoff_s=1, contact_wait_s=1)) as svc:
        channel = RecordingChannel()
        service: Notifications = svc.app.state.notifications
        service.channels[ChannelName.EMAIL] = channel
        yield svc, channel


def customer(email: str = "li@example.com", **extra: Any) -> dict[str, Any]:
    return {"channels": ["email"], "email": email, "language": "en", "do_not_disturb": None, **extra}


async def test_one_acknowledgement_per_event_recipient_and_channel(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    r = await svc.http.put("/v1/recipients/customers/C-1", json=customer(), headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    event = ticket_created("T-1", customer_id="C-1")
    await svc.deliver(event, copies=2)
    await svc.deliver(event)
    await svc.fire_timers()
    [sent] = await svc.published_exactly(SENT)
    assert [(to, m.rendered.subject) for to, m in channel.sent] == [
        ("li@example.com", "We received your request (ticket T-1)")
    ]
    assert sent.data["recipient_id"] == "customer:C-1" and sent.data["cause_event_id"] == event.id
    assert "li@example.com" not in str(sent.data)
    r = await svc.http.get(
        "/v1/deliveries", params={"event_id": event.id}, headers=svc.auth("dev-supervisor-token")
    )
    [delivery] = r.json()["items"]
    assert (delivery["status"], delivery["attempts"], delivery["channel"]) == ("sent", 1, "email")


async def test_a_transient_failure_is_retried_by_a_timer(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    await svc.http.put("/v1/recipients/customers/C-2", json=customer(), headers=svc.auth(WEB))
    channel.fail = 2
    await svc.deliver(ticket_created("T-2", customer_id="C-2"))
    await svc.fire_timers()  # first attempt fails; the retry waits a backoff
    assert channel.sent == []
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(seconds=1.5))
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(seconds=5))
    [sent] = await svc.published_exactly(SENT)
    assert sent.data["attempts"] == 3 and len(channel.sent) == 1


async def test_quiet_hours_defer_a_customers_message(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    always_quiet = {"start": "00:00", "end": "23:59"}
    body = customer(do_not_disturb=always_quiet, timezone="UTC")
    await svc.http.put("/v1/recipients/customers/C-3", json=body, headers=svc.auth(WEB))
    await svc.deliver(ticket_created("T-3", customer_id="C-3"))
    await svc.fire_timers()
    assert channel.sent == []
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=1))
    [sent] = await svc.published_exactly(SENT)
    assert sent.data["deferred"] is True


async def test_a_customer_registered_after_the_event_still_gets_the_message(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    await svc.deliver(ticket_created("T-4", customer_id="C-4"))
    await svc.fire_timers()
    await svc.http.put(
        "/v1/recipients/customers/C-4", json=customer("wang@example.com"), headers=svc.auth(WEB)
    )
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(seconds=2))
    await svc.published_exactly(SENT)
    assert [to for to, _ in channel.sent] == ["wang@example.com"]


async def test_a_staff_message_without_an_e_mail_server_fails_and_says_so(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, _ = notify
    service: Notifications = svc.app.state.notifications
    del service.channels[ChannelName.EMAIL]
    body = {"channels": ["email"], "email": "tech@example.com"}
    r = await svc.http.put("/v1/recipients/staff/tech-42", json=body, headers=svc.auth())
    assert r.status_code == 201, r.text
    await svc.deliver(work_order_assigned("T-5"))
    await svc.fire_timers()
    [failed] = await svc.published_exactly(FAILED)
    assert failed.data["reason"] == "refused" and failed.data["error"] == "email_not_configured"
    assert failed.data["recipient_id"] == "staff:tech-42"


async def test_who_may_register_and_read_recipients(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, _ = notify
    assert (
        await svc.http.put("/v1/recipients/customers/C-6", json=customer(), headers=svc.auth(WEB))
    ).status_code == 201
    # another channel neither sees nor overwrites the customer the web channel registered
    other = await svc.http.put(
        "/v1/recipients/customers/C-6", json=customer("x@example.com"), headers=svc.auth(PHONE)
    )
    assert other.status_code == 404
    assert (await svc.http.get("/v1/recipients/customers/C-6", headers=svc.auth(PHONE))).status_code == 404
    mine = await svc.http.get("/v1/recipients/customers/C-6", headers=svc.auth(WEB))
    assert mine.status_code == 200 and mine.json()["email"] == "li@example.com"
    # staff recipients are the administrator's; a technician reads templates, not deliveries
    staff = {
        "channels": ["dingtalk"],
        "robots": {"dingtalk": {"url": "https://oapi.dingtalk.com/robot/send?access_token=s3cret"}},
    }
    assert (
        await svc.http.put("/v1/recipients/staff/t-1", json=staff, headers=svc.auth(WEB))
    ).status_code == 403
    r = await svc.http.put("/v1/recipients/staff/t-1", json=staff, headers=svc.auth())
    assert r.status_code == 201 and r.json()["robots"]["dingtalk"] == {
        "host": "oapi.dingtalk.com",
        "signed": False,
    }
    assert "s3cret" not in r.text
    assert (await svc.http.get("/v1/templates", headers=svc.auth("dev-technician-token"))).status_code == 200
    assert (
        await svc.http.get(
            "/v1/deliveries", params={"ticket_id": "T"}, headers=svc.auth("dev-technician-token")
        )
    ).status_code == 403


async def test_bad_input_names_the_field(notify: tuple[ServiceUnderTest, RecordingChannel]) -> None:
    svc, _ = notify
    cases = [
        ("/v1/recipients/customers/C-7", {"channels": ["email"]}, WEB),
        ("/v1/recipients/customers/C-7", {"channels": ["sms"], "phone": "12345"}, WEB),
        ("/v1/recipients/customers/C-7", {"channels": ["dingtalk"]}, WEB),
        (
            "/v1/recipients/customers/C-7",
            customer(do_not_disturb={"start": "21:00+08:00", "end": "09:00"}),
            WEB,
        ),
        ("/v1/recipients/staff/t-2", {"channels": ["feishu"]}, "dev-admin-token"),
        ("/v1/templates/ticket_acknowledged/en", {"subject": "x ${nope}", "body": "y"}, "dev-admin-token"),
    ]
    for path, body, token in cases:
        r = await svc.http.put(path, json=body, headers=svc.auth(token))
        assert r.status_code == 422, (path, body, r.text)
        answer = r.json()
        assert answer.get("field") or answer["errors"][0]["field"] not in ("", "body"), r.text
    r = await svc.http.get("/v1/deliveries", headers=svc.auth("dev-supervisor-token"))
    assert r.status_code == 422 and r.json()["field"] == "event_id"


async def test_an_administrators_template_edit_is_used(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    edit = {"subject": "Ticket ${ticket_id} received", "body": "We are on it."}
    r = await svc.http.put("/v1/templates/ticket_acknowledged/en", json=edit, headers=svc.auth())
    assert r.status_code == 200, r.text
    await svc.http.put("/v1/recipients/customers/C-8", json=customer(), headers=svc.auth(WEB))
    await svc.deliver(ticket_created("T-8", customer_id="C-8"))
    await svc.fire_timers()
    await svc.published_exactly(SENT)
    assert channel.sent[0][1].rendered.subject == "Ticket T-8 received"


def survey_sent(ticket_id: str, link: str | None) -> CloudEvent:
    now = datetime.now(UTC).replace(microsecond=0)
    data = SurveySent(
        survey_id=f"SV-{ticket_id}-r1",
        ticket_id=ticket_id,
        round=1,
        expires_at=now + timedelta(days=7),
        occurred_at=now,
        link=link,
    )
    return contract_event(data, source="/aftersales/feedback")


async def test_the_survey_mail_carries_feedbacks_signed_link(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, channel = notify
    signed = "https://survey.example.com/v1/surveys/U1YtVC05LXIx.1796628233.c2lnbmF0dXJl"
    for ticket_id, link in (("T-9", signed), ("T-10", None)):  # T-10: an event of an older feedback
        await svc.http.put(f"/v1/recipients/customers/C-{ticket_id}", json=customer(), headers=svc.auth(WEB))
        await svc.deliver(ticket_created(ticket_id, customer_id=f"C-{ticket_id}"))
        await svc.deliver(survey_sent(ticket_id, link))
    await svc.fire_timers()
    await svc.published_exactly(SENT, count=4)
    mailed = {m.params["ticket_id"]: m for _, m in channel.sent if m.template == "survey_invitation"}
    assert mailed["T-9"].params["survey_link"] == signed
    assert signed in mailed["T-9"].rendered.body
    # The template fallback (Settings.survey_link_template) only for an event without a link.
    assert mailed["T-10"].params["survey_link"] == "http://127.0.0.1:8004/v1/surveys/SV-T-10-r1"
