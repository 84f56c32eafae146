"""The inbound mail gateway: reading a mail (sender, subject, text without quotes, HTML, attachments),
finding the ticket a reply belongs to, and, in-process with the gateway listening on loopback, mail sent
with smtplib becoming one request on the requests topic however often it is delivered, its attachments
kept in chunks and listed for staff, a reply becoming the customer's reply, and the SMTP refusals."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from aftersales.notify.app import Settings, build
from aftersales.notify.channels import Outgoing
from aftersales.notify.channels.email import SmtpServer, compose
from aftersales.notify.inbound import NO_SUBJECT, html_to_text, read_mail, thread_of, without_quotes
from aftersales.notify.store import ATTACHMENT_CHUNK_BYTES
from aftersales.notify.templates import RenderedMessage
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

DOMAIN = "aftersales.example"
REQUEST = "aftersales.request.submitted.v1"
REPLY = "aftersales.request.customer-replied.v1"


def mail(
    subject: str = "空调不制冷 Air conditioner broken",
    body: str = "It stopped cooling yesterday.",
    sender: str = "李雷 <li.lei@example.com>",
    **headers: str,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"service@{DOMAIN}"
    message["Subject"] = subject
    message["Message-ID"] = headers.pop("message_id", "<m1@mail.example.com>")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


# ---------------------------------------------------------------- reading (pure)


def test_sender_subject_text_and_attachments_are_read() -> None:
    message = mail(body="It stopped cooling.\n\nOn Mon, 1 Jan 2024, Service wrote:\n> We received it")
    message.add_attachment(b"\x89PNG-photo", maintype="image", subtype="png", filename="unit.png")
    read = read_mail(message.as_bytes(), own_domains=[DOMAIN])
    assert (read.sender_email, read.sender_name) == ("li.lei@example.com", "李雷")
    assert read.title == "空调不制冷 Air conditioner broken" and read.text == "It stopped cooling."
    [attachment] = read.attachments
    assert (attachment.name, attachment.content_type) == ("unit.png", "image/png")
    assert attachment.sha256 == hashlib.sha256(b"\x89PNG-photo").hexdigest()
    assert read.thread_ticket_id is None and not read.automatic
    assert read.mail_id == read_mail(message.as_bytes(), own_domains=[DOMAIN]).mail_id


def test_an_empty_subject_gets_a_default_and_a_long_one_is_cut() -> None:
    assert read_mail(mail(subject="  ").as_bytes(), own_domains=[]).title == NO_SUBJECT
    assert len(read_mail(mail(subject="x" * 300).as_bytes(), own_domains=[]).title) == 200


def test_quoted_text_is_stripped_in_every_client_style() -> None:
    assert without_quotes("Yes, please come.\n> earlier\n>> older") == "Yes, please come."
    assert without_quotes("好的\n\n在 2024年1月1日，售后服务 写道：\n我们已收到") == "好的"
    assert without_quotes("Fine\n-----Original Message-----\nFrom: x") == "Fine"
    assert without_quotes("From: my kitchen, it leaks") == "From: my kitchen, it leaks"


def test_html_bodies_become_text_without_scripts_or_quoted_blocks() -> None:
    html = "<html><style>p{}</style><p>The fan &amp; motor</p><p>are loud</p><blockquote>old</blockquote>"
    assert html_to_text(html) == "The fan & motor\n\nare loud"
    message = EmailMessage()
    message["From"] = "han@example.com"
    message.set_content("<p>Only <b>HTML</b></p>", subtype="html")
    assert read_mail(message.as_bytes(), own_domains=[]).text == "Only HTML"


def test_a_reply_is_matched_to_its_ticket_by_notify_message_id_or_subject_tag() -> None:
    sent = compose(
        SmtpServer("localhost", 25, f"service@{DOMAIN}"),
        "li.lei@example.com",
        Outgoing("E-1|customer:C-1|email", "t", {}, RenderedMessage("Received", "body"), "T-0123abcd"),
    )
    assert sent["Subject"] == "Received [#T-0123abcd]"
    ours = str(sent["Message-ID"])
    assert thread_of([ours], "Re: Received", [DOMAIN]) == "T-0123abcd"
    assert thread_of(["", f"<a@b> {ours}"], "", [DOMAIN]) == "T-0123abcd"
    assert thread_of([ours], "Re: Received", ["other.example"]) is None  # not our domain
    assert thread_of([], "Re: about [#T-77]", [DOMAIN]) == "T-77"
    assert thread_of(["<t.T-1.zz@elsewhere>"], "hello", [DOMAIN]) is None


def test_auto_replies_are_recognised() -> None:
    assert read_mail(mail(Auto_Submitted="auto-replied").as_bytes(), own_domains=[]).automatic
    assert read_mail(mail(Precedence="bulk").as_bytes(), own_domains=[]).automatic


# ---------------------------------------------------------------- the gateway, in-process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[ServiceUnderTest, int]]:
    port = free_port()
    settings = Settings(
        **FAST,
        smtp_inbound_port=port,
        inbound_mail_domains=[DOMAIN],
        inbound_mail_max_bytes=600_000,
        inbound_mail_region_code="310000",
    )
    async with in_process(build, settings) as svc:
        await listening(port)
        yield svc, port


async def listening(port: int) -> None:
    """Wait until the gateway (a background task of the runtime) accepts connections."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return
    raise AssertionError(f"the inbound mail gateway is not listening on {port}")


async def send(port: int, message: EmailMessage, to: str = f"service@{DOMAIN}") -> Any:
    def deliver() -> Any:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            return smtp.send_message(message, to_addrs=[to])

    return await asyncio.to_thread(deliver)


async def test_a_mail_becomes_one_request_with_its_attachments_listed(
    gateway: tuple[ServiceUnderTest, int],
) -> None:
    svc, port = gateway
    message = mail()
    photo = bytes(range(256)) * 1200  # 300 KB: two chunks
    message.add_attachment(photo, maintype="image", subtype="jpeg", filename="unit.jpg")
    message.add_attachment(b"MZ...", maintype="application", subtype="x-msdownload", filename="x.exe")
    await send(port, message)
    await send(port, message)  # delivered again: the same request

    [event] = await svc.published.wait_for(REQUEST)
    request = event.data
    assert request["channel"] == "email" and request["title"] == "空调不制冷 Air conditioner broken"
    assert request["customer"] == {
        "id": None,
        "name": "李雷",
        "phone": None,
        "email": "li.lei@example.com",
        "tier": "standard",
        "region_code": "310000",
        "address": None,
        "timezone": "Asia/Shanghai",
    }
    assert request["product"]["device_type"] == "unknown"
    assert request["description"].startswith("It stopped cooling yesterday.")
    mail_id = request["idempotency_key"]
    assert request["external_ref"] == f"mail:{mail_id}" and "unit.jpg" in request["description"]

    staff = svc.auth("dev-supervisor-token")
    r = await svc.http.get("/v1/inbound-mail/%3Cm1@mail.example.com%3E", headers=staff)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["mail_id"] == mail_id and listed["kind"] == "request"
    assert "li.lei" not in r.text
    kept, refused = listed["attachments"]
    assert (kept["name"], kept["size_bytes"], kept["refused"]) == ("unit.jpg", len(photo), None)
    assert kept["sha256"] == hashlib.sha256(photo).hexdigest() and len(photo) > ATTACHMENT_CHUNK_BYTES
    assert (refused["name"], refused["refused"]) == ("x.exe", "type")
    content = await svc.http.get(f"/v1/inbound-mail/mail:{mail_id}/attachments/0", headers=staff)
    assert content.status_code == 200 and content.content == photo
    assert (await svc.http.get(f"/v1/inbound-mail/{mail_id}/attachments/1", headers=staff)).status_code == 404
    web = await svc.http.get(f"/v1/inbound-mail/{mail_id}", headers=svc.auth("dev-web-token"))
    assert web.status_code == 403


async def test_a_reply_on_a_ticket_thread_is_the_customer_reply(
    gateway: tuple[ServiceUnderTest, int],
) -> None:
    svc, port = gateway
    reply = mail(
        subject="Re: We received your request",
        body="Photos attached.\n> We received your request",
        message_id="<r1@mail.example.com>",
        In_Reply_To=f"<t.T-abc123.{'0' * 24}@{DOMAIN}>",
    )
    await send(port, reply)
    [event] = await svc.published.wait_for(REPLY)
    assert event.subject == "T-abc123"
    assert event.data["ticket_id"] == "T-abc123" and event.data["text"] == "Photos attached."
    assert event.data["email"] == "li.lei@example.com" and event.data["channel"] == "email"
    assert not svc.published.of_type(REQUEST)


async def test_the_gateway_refuses_what_it_must_not_take(gateway: tuple[ServiceUnderTest, int]) -> None:
    svc, port = gateway
    with pytest.raises(smtplib.SMTPRecipientsRefused) as unknown:
        await send(port, mail(), to="someone@elsewhere.example")
    assert [code for code, _ in unknown.value.recipients.values()] == [550]

    big = mail(message_id="<big@mail.example.com>")
    big.add_attachment(b"x" * 700_000, maintype="image", subtype="png", filename="big.png")
    with pytest.raises(smtplib.SMTPResponseException) as too_large:
        await send(port, big)
    assert too_large.value.smtp_code == 552

    with pytest.raises(smtplib.SMTPDataError) as nobody:
        await send(port, mail(sender="undisclosed-recipients:;", message_id="<x@y>"))
    assert nobody.value.smtp_code == 550

    await send(port, mail(Auto_Submitted="auto-replied", message_id="<ooo@mail.example.com>"))
    await svc.drain_outbox()
    assert not svc.published.of_type(REQUEST)


async def test_a_mail_the_database_cannot_take_is_refused_for_a_retry_then_taken(
    gateway: tuple[ServiceUnderTest, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    svc, port = gateway
    store = svc.app.state.inbox.store

    async def unreachable(*_: Any) -> bool:
        raise ServerSelectionTimeoutError("database down")

    with monkeypatch.context() as patched:
        patched.setattr(store, "accept", unreachable)
        with pytest.raises(smtplib.SMTPDataError) as busy:
            await send(port, mail(message_id="<retry@mail.example.com>"))
    assert busy.value.smtp_code == 451
    await svc.drain_outbox()
    assert not svc.published.of_type(REQUEST)
    await send(port, mail(message_id="<retry@mail.example.com>"))  # the sending server's retry
    assert len(await svc.published.wait_for(REQUEST)) == 1
