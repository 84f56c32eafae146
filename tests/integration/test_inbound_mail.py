"""Inbound mail end to end: intake and notify as real processes on real Kafka + FerretDB, mail sent with
smtplib to notify's SMTP gateway. A customer's mail (with an attachment) becomes one ticket however often
it is delivered and its sender gets the acknowledgement without anybody registering them; the customer's
reply to the acknowledgement mail goes on that ticket; too large a mail is refused with 552, mail for
another domain with 550."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from harness import Platform, auth, free_port, produce, unique, wait_until
from notify_receivers import Mailbox, smtp_server

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import WorkOrderAccepted, WorkOrderAssigned, WorkOrderPending
from aftersales.shared.envelope import CloudEvent, new_event

DOMAIN = "aftersales.example"
DESK = auth("dev-supervisor-token")
MAX_BYTES = 200_000


@pytest.fixture
def sink() -> Iterator[Mailbox]:
    """The SMTP server notify sends its own mails to (the acknowledgement the customer replies to)."""
    with smtp_server(free_port()) as box:
        yield box


def customer_mail(sender: str, message_id: str, **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"李雷 <{sender}>"
    mail["To"] = f"service@{DOMAIN}"
    mail["Subject"] = headers.pop("subject", "空调不制冷 / air conditioner not cooling")
    mail["Message-ID"] = message_id
    for name, value in headers.items():
        mail[name] = value
    mail.set_content("It stopped cooling yesterday, model KF-35.")
    return mail


async def send(port: int, mail: EmailMessage, to: str = f"service@{DOMAIN}") -> None:
    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
            smtp.send_message(mail, to_addrs=[to])

    await asyncio.to_thread(deliver)


async def accepting(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def email_tickets(client: httpx.AsyncClient, intake: str) -> list[dict[str, Any]]:
    r = await client.get(f"{intake}/v1/tickets", params={"channel": "email"}, headers=DESK)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def as_routing(platform: Platform, ticket_id: str) -> None:
    """The ticket's work order assigned, accepted and waiting on the customer, as routing publishes it."""
    common: dict[str, Any] = {"ticket_id": ticket_id, "grid_id": "G-1", "occurred_at": datetime.now(UTC)}
    work = {"priority": Priority.P3, "category": Category.HARDWARE_FAULT}
    for data in (
        WorkOrderAssigned(**common, technician_id="tech-7", tier=1, via="direct", **work),
        WorkOrderAccepted(**common, technician_id="tech-7"),
        WorkOrderPending(**common, technician_id="tech-7", reason="waiting for photos"),
    ):
        event: CloudEvent = new_event(data, source="/aftersales/routing", subject=ticket_id)
        await produce(
            platform.infra,
            platform.topic(Topic.ASSIGNMENTS),
            event.value(),
            key=event.key,
            headers=event.headers(),
        )


async def test_mail_becomes_one_ticket_a_reply_goes_on_it_and_bad_mail_is_refused(
    platform: Platform, sink: Mailbox
) -> None:
    inbound = free_port()
    procs = await platform.start_ready(
        "intake",
        "notify",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(sink.port),
        SMTP_SENDER=f"service@{DOMAIN}",
        SMTP_INBOUND_PORT=str(inbound),
        INBOUND_MAIL_DOMAINS=DOMAIN,
        INBOUND_MAIL_MAX_BYTES=str(MAX_BYTES),
        INBOUND_MAIL_REGION_CODE="310000",
        INBOUND_MAIL_QUIET_START="00:00",  # no quiet hours: the acknowledgement goes at any hour of the run
        INBOUND_MAIL_QUIET_END="00:00",
        CONTACT_WAIT_S="0.5",
    )
    intake, notify = procs["intake"].url, procs["notify"].url
    await wait_until("the inbound gateway listening", lambda: accepting(inbound))
    sender = f"{unique('li.lei.')}@example.com"
    async with httpx.AsyncClient(timeout=20) as client:
        # A customer's mail with a photo: one ticket for that customer, the photo listed for staff.
        first = customer_mail(sender, f"<{unique('m-')}@mail.example.com>")
        first.add_attachment(b"\x89PNG" + bytes(5000), maintype="image", subtype="png", filename="unit.png")
        await send(inbound, first)
        [ticket] = await wait_until("the mail's ticket", lambda: email_tickets(client, intake))
        r = await client.get(f"{intake}/v1/tickets/{ticket['id']}", headers=DESK)
        opened = r.json()
        assert opened["title"] == "空调不制冷 / air conditioner not cooling"
        assert opened["external_ref"].startswith("mail:") and "unit.png" in opened["description"]
        customer = (await client.get(f"{intake}/v1/customers/{opened['customer_id']}", headers=DESK)).json()
        assert customer["email"] == sender and customer["name"] == "李雷"
        listed = await client.get(f"{notify}/v1/inbound-mail/{opened['external_ref']}", headers=DESK)
        assert listed.status_code == 200, listed.text
        [photo] = listed.json()["attachments"]
        assert (photo["name"], photo["content_type"], photo["size_bytes"]) == ("unit.png", "image/png", 5004)

        await send(inbound, first)  # the sending server delivers the same mail again: accepted, no new ticket

        # The acknowledgement reaches the sender by itself, in the mail's language: nobody registered them.
        [ack] = await wait_until("the acknowledgement mail", lambda: _mails(sink, sender))
        assert f"[#{ticket['id']}]" in ack["Subject"] and "已受理" in ack["Subject"]
        r = await client.get(f"{notify}/v1/recipients/customers/{opened['customer_id']}", headers=DESK)
        assert (r.status_code, r.json()["email"], r.json()["language"]) == (200, sender, "zh"), r.text
        assert listed.json()["ticket_id"] == ticket["id"] and sender not in listed.text

        # The customer answers the acknowledgement while the technician waits: the ticket goes back to work.
        await as_routing(platform, ticket["id"])
        await wait_until(
            "pending_customer", lambda: _status(client, intake, ticket["id"], "pending_customer")
        )
        reply = customer_mail(
            sender,
            f"<{unique('r-')}@mail.example.com>",
            subject=f"Re: {ack['Subject']}",
            **{"In-Reply-To": str(ack["Message-ID"]), "References": str(ack["Message-ID"])},
        )
        await send(inbound, reply)
        doc = await wait_until(
            "the reply applied", lambda: _status(client, intake, ticket["id"], "in_progress")
        )
        assert "ticket.customer_replied" in [e["type"] for e in doc["timeline"]]
        assert len(await email_tickets(client, intake)) == 1, "the repeated mail or the reply opened a ticket"

    # Refusals the sending server understands: too large (552), not our domain (550).
    huge = customer_mail(sender, f"<{unique('big-')}@mail.example.com>")
    huge.add_attachment(bytes(MAX_BYTES), maintype="image", subtype="png", filename="huge.png")
    with pytest.raises(smtplib.SMTPResponseException) as too_large:
        await send(inbound, huge)
    assert too_large.value.smtp_code == 552
    with pytest.raises(smtplib.SMTPRecipientsRefused) as elsewhere:
        await send(inbound, customer_mail(sender, "<x@mail.example.com>"), to="help@elsewhere.example")
    assert [code for code, _ in elsewhere.value.recipients.values()] == [550]


async def _mails(sink: Mailbox, address: str) -> list[EmailMessage] | None:
    return sink.to(address) or None


async def _status(
    client: httpx.AsyncClient, intake: str, ticket_id: str, status: str
) -> dict[str, Any] | None:
    doc: dict[str, Any] = (await client.get(f"{intake}/v1/tickets/{ticket_id}", headers=DESK)).json()
    return doc if doc["status"] == status else None
