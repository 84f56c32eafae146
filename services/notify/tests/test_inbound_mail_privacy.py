"""Inbound mail and personal-data rights, in-process: an erasure reaches the mails a customer's tickets
were opened from (named by the request's `mail_ids`) and the replies on its tickets' threads (listed by
ticket id), deleting their attachments and leaving a tombstone, once however often it is delivered; the
retention timer of a mail's bucket erases it after its period; other customers' mails are untouched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from prometheus_client import REGISTRY

from aftersales.notify.app import Settings, build
from aftersales.notify.inbound import mail_id_of
from aftersales.notify.retention import INBOUND_MAIL
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

DOMAIN = "aftersales.example"
CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
STAFF = "dev-admin-token"
SENDER = "li.lei@example.com"
DAYS = 30


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    settings = Settings(**FAST, inbound_mail_domains=[DOMAIN], retention_inbound_mail_days=DAYS)
    async with in_process(build, settings) as running:
        yield running


def mail(message_id: str, subject: str = "Air conditioner broken", sender: str = SENDER) -> bytes:
    message = EmailMessage()
    message["From"] = f"Li Lei <{sender}>"
    message["To"] = f"service@{DOMAIN}"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content("It stopped cooling. Call me.")
    message.add_attachment(b"\x89PNG-photo " * 40_000, maintype="image", subtype="png", filename="li-lei.png")
    return message.as_bytes()


async def receive(svc: ServiceUnderTest, message_id: str, **kw: str) -> str:
    """Deliver a mail to the inbox; return its mail id."""
    assert await svc.app.state.inbox.receive(mail(message_id, **kw)) in ("request", "reply")
    return mail_id_of(message_id)


async def attachment_status(svc: ServiceUnderTest, mail_id: str) -> int:
    r = await svc.http.get(f"/v1/inbound-mail/{mail_id}/attachments/0", headers=svc.auth(STAFF))
    return r.status_code


async def chunks_of(svc: ServiceUnderTest, mail_id: str) -> int:
    """Return how many chunks of the mail's first attachment are stored (found by `_id`)."""
    chunks = svc.runtime.db["inbound_attachments"]
    return sum([await chunks.find_one({"_id": f"{mail_id}.0:{n}"}) is not None for n in range(4)])


def erasure(ticket_ids: list[str], mail_ids: list[str], chunk: int = 0, chunks: int = 1) -> ErasureRequested:
    return ErasureRequested(
        erasure_id="ER-m1",
        customer_id="C-m1",
        ticket_ids=ticket_ids,
        mail_ids=mail_ids,
        chunk=chunk,
        chunks=chunks,
        requested_at=datetime.now(UTC),
    )


async def test_erasure_removes_a_request_mails_and_a_reply_mails_content(svc: ServiceUnderTest) -> None:
    request = await receive(svc, "<m1@mail.example.com>")
    reply = await receive(svc, "<m2@mail.example.com>", subject="Re: [#T-m1] your ticket")
    other = await receive(svc, "<m3@mail.example.com>", sender="wang@example.com")
    assert await chunks_of(svc, request) == 2 and await attachment_status(svc, reply) == 200
    await svc.runtime.relay.drain()  # the commands went to intake

    first = erasure(["T-m1"], [request], chunk=0, chunks=2)
    second = erasure(["T-m2"], [], chunk=1, chunks=2)  # a chunk whose ticket has no mails
    for event in (new_event(e, source="/aftersales/intake", subject="C-m1") for e in (first, second)):
        await svc.deliver(event, copies=2)
    [confirmed] = await svc.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"inbound_mails": 2, "recipients": 0}

    for erased in (request, reply):
        assert await attachment_status(svc, erased) == 404 and await chunks_of(svc, erased) == 0
        doc = await svc.runtime.db["inbound_mail"].find_one({"_id": erased})
        assert doc is not None and doc["erased_at"] and "outbox" not in doc
        assert "li-lei" not in str(doc) and SENDER not in str(doc) and "sha256" not in str(doc)
        assert doc["attachments"][0]["content_type"] == "image/png"
    assert await svc.app.state.inbox.receive(mail("<m1@mail.example.com>")) == "duplicate"
    assert await svc.runtime.db["inbound_mail_threads"].find_one({"_id": "T-m1"}) is None
    assert await attachment_status(svc, other) == 200 and await chunks_of(svc, other) == 2


async def test_an_erasure_finds_a_reply_by_its_ticket_alone(svc: ServiceUnderTest) -> None:
    reply = await receive(svc, "<m4@mail.example.com>", subject="[#T-m4] more photos")
    await svc.deliver(new_event(erasure(["T-m4"], []), source="/aftersales/intake", subject="C-m1"))
    [confirmed] = await svc.published_exactly(CONFIRMED)
    assert confirmed.data["counts"]["inbound_mails"] == 1
    doc = await svc.runtime.db["inbound_mail"].find_one({"_id": reply})
    assert doc is not None and SENDER not in str(doc)  # a command still pending, with the address, too


def pseudonymised() -> float:
    labels = {"service": "notify", "kind": INBOUND_MAIL}
    return REGISTRY.get_sample_value("aftersales_retention_pseudonymised_total", labels) or 0.0


async def test_retention_erases_a_mail_after_its_period(svc: ServiceUnderTest) -> None:
    mail_id = await receive(svc, "<m5@mail.example.com>")
    before, now = pseudonymised(), datetime.now(UTC)
    await svc.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert await attachment_status(svc, mail_id) == 200
    await svc.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert await attachment_status(svc, mail_id) == 404 and await chunks_of(svc, mail_id) == 0
    assert pseudonymised() == before + 1
    r = await svc.http.get(f"/v1/inbound-mail/{mail_id}", headers=svc.auth(STAFF))
    assert r.status_code == 200 and r.json()["kind"] == "request"  # the tombstone stays
    assert r.json()["erased_at"] and r.json()["attachments"][0]["name"] is None


async def test_a_zero_period_keeps_mails() -> None:
    settings = Settings(**FAST, inbound_mail_domains=[DOMAIN], retention_inbound_mail_days=0)
    async with in_process(build, settings) as svc:
        mail_id = await receive(svc, "<m6@mail.example.com>")
        await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=20 * 365))
        assert await attachment_status(svc, mail_id) == 200
    with pytest.raises(ValueError, match="retention_inbound_mail_days"):
        Settings(**FAST, retention_inbound_mail_days=-1)
