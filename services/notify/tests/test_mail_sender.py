"""A customer who writes in by mail is answered by mail, in-process: the mail's record names the ticket
intake opens for it (the contract's `requested_ticket_id`), intake's `ticket.created` makes the sender
the customer's contact point (unless a channel registered one) and the acknowledgement goes out in the
mail's language, once however often the event comes; the address then lives in the recipient alone, the
staff API never shows it, and an erasure of the ticket reaches the mail it came from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from email.message import EmailMessage

import pytest

from aftersales.notify.app import Settings, build
from aftersales.notify.domain import ChannelName
from aftersales.notify.inbound import mail_id_of
from aftersales.notify.service import Notifications
from aftersales.notify.store import SOURCE
from aftersales.notify.testing import RecordingChannel
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.contracts.requests import requested_ticket_id
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created

DOMAIN = "aftersales.example"
SENDER = "li.lei@example.com"
SENT = "aftersales.notification.sent.v1"
STAFF, WEB = "dev-supervisor-token", "dev-web-token"


@pytest.fixture
async def notify() -> AsyncIterator[tuple[ServiceUnderTest, RecordingChannel]]:
    # No quiet hours, so whether the acknowledgement goes at once does not depend on the hour of the run.
    settings = Settings(
        **FAST,
        inbound_mail_domains=[DOMAIN],
        inbound_mail_quiet_start=time(0),
        inbound_mail_quiet_end=time(0),
    )
    async with in_process(build, settings) as svc:
        outbox = RecordingChannel()
        service: Notifications = svc.app.state.notifications
        service.channels[ChannelName.EMAIL] = outbox
        yield svc, outbox


def mail(message_id: str, subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"李雷 <{SENDER}>"
    message["To"] = f"service@{DOMAIN}"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content("It stopped cooling yesterday.")
    return message.as_bytes()


async def receive(svc: ServiceUnderTest, message_id: str, subject: str = "空调不制冷") -> tuple[str, str]:
    """Deliver a new customer's mail; return its mail id and the id of the ticket intake opens for it."""
    assert await svc.app.state.inbox.receive(mail(message_id, subject)) == "request"
    mail_id = mail_id_of(message_id)
    return mail_id, requested_ticket_id(f"kafka:{SOURCE}", mail_id)


async def stored_sender(svc: ServiceUnderTest, mail_id: str) -> object:
    doc = await svc.runtime.db["inbound_mail"].find_one({"_id": mail_id})
    assert doc is not None
    return doc.get("sender")


async def test_the_sender_of_a_mail_gets_the_acknowledgement_of_its_ticket_once(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, outbox = notify
    mail_id, ticket_id = await receive(svc, "<a1@mail.example.com>")
    listed = (await svc.http.get(f"/v1/inbound-mail/{mail_id}", headers=svc.auth(STAFF))).json()
    assert listed["kind"] == "request" and listed["ticket_id"] == ticket_id
    assert SENDER not in str(listed), "the staff API shows no sender address"

    created = ticket_created(ticket_id, customer_id="C-mail", channel=Channel.EMAIL)
    await svc.deliver(created, copies=2)
    await svc.deliver(created)
    await svc.fire_timers()
    [sent] = await svc.published_exactly(SENT)
    [(to, message)] = outbox.sent
    assert to == SENDER and message.rendered.subject == f"您的服务请求已受理（工单 {ticket_id}）"
    assert sent.data["recipient_id"] == "customer:C-mail" and SENDER not in str(sent.data)

    r = await svc.http.get("/v1/recipients/customers/C-mail", headers=svc.auth(STAFF))
    assert r.status_code == 200, r.text
    contact = r.json()
    assert (contact["email"], contact["language"], contact["channels"]) == (SENDER, "zh", ["email"])
    assert await stored_sender(svc, mail_id) is None, "the address lives in the recipient alone"


async def test_a_contact_point_a_channel_registered_is_kept_and_an_english_mail_is_answered_in_english(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, outbox = notify
    mail_id, ticket_id = await receive(svc, "<b1@mail.example.com>", subject="Fridge is noisy")
    own = {"channels": ["email"], "email": "li@work.example.com", "language": "en", "do_not_disturb": None}
    r = await svc.http.put("/v1/recipients/customers/C-own", json=own, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    await svc.deliver(ticket_created(ticket_id, customer_id="C-own", channel=Channel.EMAIL))
    await svc.fire_timers()
    assert [to for to, _ in outbox.sent] == ["li@work.example.com"]
    assert (await svc.http.get("/v1/recipients/customers/C-own", headers=svc.auth(STAFF))).json()[
        "email"
    ] == "li@work.example.com"
    assert await stored_sender(svc, mail_id) is None

    # A new customer writing in English is answered in English.
    _, other = await receive(svc, "<b2@mail.example.com>", subject="Fridge is noisy")
    await svc.deliver(ticket_created(other, customer_id="C-en", channel=Channel.EMAIL))
    await svc.fire_timers()
    assert outbox.sent[-1][0] == SENDER
    assert outbox.sent[-1][1].rendered.subject == f"We received your request (ticket {other})"


async def test_an_email_ticket_notify_did_not_receive_waits_for_a_contact_point(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, outbox = notify
    await svc.deliver(ticket_created("T-elsewhere", customer_id="C-x", channel=Channel.EMAIL))
    await svc.fire_timers()
    assert outbox.sent == []
    r = await svc.http.get("/v1/recipients/customers/C-x", headers=svc.auth(STAFF))
    assert r.status_code == 404


async def test_erasing_a_ticket_erases_the_mail_it_came_from_before_it_was_answered(
    notify: tuple[ServiceUnderTest, RecordingChannel],
) -> None:
    svc, outbox = notify
    mail_id, ticket_id = await receive(svc, "<c1@mail.example.com>")
    erasure = ErasureRequested(
        erasure_id="ER-mail",
        customer_id="C-erased",
        ticket_ids=[ticket_id],
        mail_ids=[],
        chunk=0,
        chunks=1,
        requested_at=datetime.now(UTC),
    )
    await svc.deliver(new_event(erasure, source="/aftersales/intake", subject="C-erased"))
    assert await stored_sender(svc, mail_id) is None
    # The ticket's creation read after the erasure finds nobody to answer.
    await svc.deliver(ticket_created(ticket_id, customer_id="C-erased", channel=Channel.EMAIL))
    await svc.fire_timers()
    assert outbox.sent == []
