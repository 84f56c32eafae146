"""notify as a real process on real Kafka + FerretDB, with intake, sending over real protocols: mails to
a real SMTP server (aiosmtpd) started by the test, SMS to a local HTTP server that checks Aliyun's
signature, and a DingTalk robot message to one that checks DingTalk's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from harness import Platform, auth, data_of, free_port, headers_of, produce, read_to_end, unique, wait_until
from notify_receivers import Mailbox, ProviderStub, body_of, provider_stub, smtp_server

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import TicketCreated, WorkOrderAssigned
from aftersales.shared.envelope import new_event

WEB = auth("dev-web-token")
ADMIN = auth("dev-admin-token")
DESK = auth("dev-supervisor-token")
SENT = "aftersales.notification.sent.v1"


@pytest.fixture
def smtp() -> Iterator[Mailbox]:
    with smtp_server(free_port()) as box:
        yield box


@pytest.fixture
def providers() -> Iterator[ProviderStub]:
    with provider_stub() as stub:
        yield stub


def notify_env(smtp_port: int, stub: ProviderStub) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_SENDER": "service@aftersales.example",
        "SMS_PROVIDER": "aliyun",
        "ALIYUN_SMS_ENDPOINT": f"{stub.url}/sms",
        "ALIYUN_ACCESS_KEY_ID": "test-key-id",
        "ALIYUN_ACCESS_KEY_SECRET": stub.aliyun_secret,
        "ALIYUN_SMS_SIGN_NAME": "售后服务",
        "ALIYUN_SMS_TEMPLATE_CODES": json.dumps({"ticket_acknowledged": "SMS_100001"}),
        "DELIVERY_BACKOFF_S": "0.5",
        "CONTACT_WAIT_S": "0.5",
    }


def ticket(**contact: str) -> dict[str, Any]:
    return {
        "channel": "web",
        "customer": {"name": "Li Lei", "region_code": "310000/310100/310104", **contact},
        "product": {"device_type": "air_conditioner", "model": "KF-35"},
        "title": "Air conditioner is broken",
    }


async def open_ticket(client: httpx.AsyncClient, intake: str, **contact: str) -> tuple[str, str]:
    """Open a ticket through intake as the web channel; return its id and the customer's id."""
    r = await client.post(f"{intake}/v1/tickets", json=ticket(**contact), headers=WEB)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["customer_id"]


async def register(client: httpx.AsyncClient, notify: str, customer_id: str, **contact: Any) -> None:
    body = {"language": "en", "do_not_disturb": None, **contact}
    r = await client.put(f"{notify}/v1/recipients/customers/{customer_id}", json=body, headers=WEB)
    assert r.status_code in (200, 201), r.text


async def deliveries(client: httpx.AsyncClient, notify: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get(f"{notify}/v1/deliveries", params=params, headers=DESK)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_acknowledgement_mail_once_per_event_with_retry_and_status_events(
    platform: Platform, smtp: Mailbox, providers: ProviderStub
) -> None:
    procs = await platform.start_ready("intake", "notify", **notify_env(smtp.port, providers))
    intake, notify = procs["intake"].url, procs["notify"].url
    email = f"{unique('li.lei.')}@example.com"
    async with httpx.AsyncClient(timeout=10) as client:
        # The channel opens the ticket, learns the customer's id from intake's receipt, then gives notify
        # the contact points: the acknowledgement waits for them.
        ticket_id, customer = await open_ticket(client, intake, email=email)
        await register(client, notify, customer, channels=["email"], email=email)
        [mail] = await wait_until("the acknowledgement mail", lambda: _mails(smtp, email, 1))
        assert ticket_id in mail["Subject"] and ticket_id in body_of(mail)
        assert mail["From"] == "service@aftersales.example"

        # intake's event, redelivered (same ce_id, same key): nothing is sent twice. A new event of the
        # same ticket key comes after it on the same partition; once its mail is there, the copy was seen.
        [created] = await read_to_end(
            platform.infra,
            platform.topic(Topic.TICKETS),
            where=lambda r: headers_of(r)["ce_subject"] == ticket_id,
        )
        await produce(
            platform.infra,
            platform.topic(Topic.TICKETS),
            created.value,
            key=created.key,
            headers=headers_of(created),
        )
        other, other_email = unique("C-"), f"{unique('han.meimei.')}@example.com"
        await register(client, notify, other, channels=["email"], email=other_email)
        marker = new_event(
            TicketCreated(**{**data_of(created), "customer_id": other}),
            source="/aftersales/intake",
            subject=ticket_id,
        )
        await produce(
            platform.infra,
            platform.topic(Topic.TICKETS),
            marker.value(),
            key=marker.key,
            headers=marker.headers(),
        )
        await wait_until("the mail of the later event", lambda: _mails(smtp, other_email, 1))
        assert len(smtp.to(email)) == 1, "a redelivered event sent a second mail"
        [delivery] = await wait_until(
            "the first delivery recorded as sent",
            lambda: _sent(client, notify, event_id=headers_of(created)["ce_id"]),
        )
        assert (delivery["attempts"], delivery["channel"]) == (1, "email")

        # A temporary refusal of the SMTP server (451) is retried after a backoff, then delivered.
        smtp.fail_next = 1
        third_email = f"{unique('wang.fang.')}@example.com"
        retried_ticket, third = await open_ticket(client, intake, email=third_email)
        await register(client, notify, third, channels=["email"], email=third_email)
        await wait_until("the retried mail", lambda: _mails(smtp, third_email, 1))
        assert smtp.refused == 1
        [retried] = await wait_until(
            "the retried delivery recorded as sent",
            lambda: _sent(client, notify, ticket_id=retried_ticket),
        )
        assert retried["attempts"] == 2

    # Delivery status events: one per message, recipients by id, no address anywhere in them.
    status = await wait_until(
        "three notification.sent events",
        lambda: _status_events(platform, 3),
    )
    for record in status:
        raw = record.value.decode() + json.dumps(headers_of(record))
        assert "@" not in raw and "example.com" not in raw, raw
    first = next(r for r in status if data_of(r)["cause_event_id"] == headers_of(created)["ce_id"])
    assert data_of(first)["recipient_id"] == f"customer:{customer}" and data_of(first)["attempts"] == 1
    assert data_of(first)["channel"] == "email" and data_of(first)["ticket_id"] == ticket_id


async def test_signed_sms_to_a_customer_and_signed_dingtalk_message_to_a_technician(
    platform: Platform, smtp: Mailbox, providers: ProviderStub
) -> None:
    procs = await platform.start_ready("intake", "notify", **notify_env(smtp.port, providers))
    intake, notify = procs["intake"].url, procs["notify"].url
    technician = unique("tech-")
    async with httpx.AsyncClient(timeout=10) as client:
        robot = {"url": f"{providers.url}/dingtalk?access_token=t0ken", "secret": providers.dingtalk_secret}
        r = await client.put(
            f"{notify}/v1/recipients/staff/{technician}",
            json={"channels": ["dingtalk"], "robots": {"dingtalk": robot}, "language": "zh"},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        assert "t0ken" not in r.text and providers.dingtalk_secret not in r.text

        ticket_id, customer = await open_ticket(client, intake, phone="+8613912345678")
        await register(client, notify, customer, channels=["sms"], phone="+8613912345678", language="zh")
        [sms] = await wait_until("the SMS", lambda: _received(providers, "sms"))
        assert sms.signature_ok, sms.query
        assert sms.query["PhoneNumbers"] == "13912345678" and sms.query["TemplateCode"] == "SMS_100001"
        assert json.loads(sms.query["TemplateParam"]) == {"ticket_id": ticket_id}

        # routing's assignment (published as routing would): the technician's DingTalk group hears of it
        assigned = WorkOrderAssigned(
            ticket_id=ticket_id,
            grid_id="grid-1",
            occurred_at=datetime.now(UTC),
            technician_id=technician,
            tier=1,
            via="direct",
            priority=Priority.P2,
            category=Category.HARDWARE_FAULT,
        )
        event = new_event(assigned, source="/aftersales/routing", subject=ticket_id)
        await produce(
            platform.infra,
            platform.topic(Topic.ASSIGNMENTS),
            event.value(),
            key=event.key,
            headers=event.headers(),
        )
        [ding] = await wait_until("the DingTalk message", lambda: _received(providers, "dingtalk"))
        assert ding.signature_ok, ding.query
        assert ding.body["msgtype"] == "text" and ticket_id in ding.body["text"]["content"]
        assert "新工单" in ding.body["text"]["content"]
        [delivery] = await wait_until(
            "the DingTalk delivery recorded as sent", lambda: _sent(client, notify, event_id=event.id)
        )
        assert delivery["recipient_id"] == f"staff:{technician}" and delivery["attempts"] == 1


async def _sent(client: httpx.AsyncClient, notify: str, **params: str) -> list[dict[str, Any]] | None:
    """The deliveries matching `params` once all of them are recorded as sent."""
    found = await deliveries(client, notify, **params)
    return found if found and all(d["status"] == "sent" for d in found) else None


async def _mails(box: Mailbox, address: str, count: int) -> list[Any] | None:
    found = box.to(address)
    return found if len(found) >= count else None


async def _received(stub: ProviderStub, kind: str) -> list[Any] | None:
    return stub.of(kind) or None


async def _status_events(platform: Platform, count: int) -> list[Any] | None:
    records = await read_to_end(
        platform.infra,
        platform.topic(Topic.NOTIFICATIONS),
        where=lambda r: headers_of(r)["ce_type"] == SENT,
        distinct=True,
    )
    return records if len(records) >= count else None
