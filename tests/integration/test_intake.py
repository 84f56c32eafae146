"""Intake on real Kafka + MongoDB-wire server, as a real process: tickets in over HTTP and Kafka, CloudEvents
out, idempotency under concurrency, and bad input that leaves the database and the topic untouched."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from harness import Platform, auth, data_of, headers_of, mongo, produce, read_to_end, read_topic

from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent

CREATED = "aftersales.ticket.created.v1"


def ticket_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "web",
        "customer": {
            "name": "Li Lei",
            "phone": "+8613800138000",
            "email": "li.lei@example.com",
            "tier": "gold",
            "region_code": "310000/310100/310104",
            "address": "1 Century Avenue",
        },
        "product": {
            "device_type": "air_conditioner",
            "model": "KF-35",
            "serial": "AC-1",
            "purchase_date": "2026-03-01",
        },
        "title": "Air conditioner is broken",
        "description": "It makes a loud noise and does not cool.",
        "external_ref": "web-42",
    }
    body.update(overrides)
    return body


def iot_body(serial: str, fault_code: str, observed_at: datetime, severity: int = 3) -> dict[str, Any]:
    return ticket_body(
        channel="iot",
        customer={"id": f"OWNER-{serial}", "region_code": "310000/310100"},
        product={"device_type": "chiller", "serial": serial},
        title=f"Alert {fault_code}",
        description="",
        external_ref=None,
        iot={"fault_code": fault_code, "severity": severity, "observed_at": observed_at.isoformat()},
    )


def request_event(body: dict[str, Any], *, key: str, source: str = "/gateways/iot") -> CloudEvent:
    return CloudEvent(type="aftersales.request.submitted.v1", source=source, subject=key, data=body)


async def counts(platform: Platform) -> tuple[int, int]:
    client = mongo(platform.infra)
    try:
        db = client[platform.database("intake")]
        return await db["tickets"].count_documents({}), await db["customers"].count_documents({})
    finally:
        await client.close()


async def ticket_events(platform: Platform, *, expect: int, timeout_s: float = 20) -> list[Any]:
    return await read_topic(platform.infra, platform.topic(Topic.TICKETS), expect=expect, timeout_s=timeout_s)


async def all_ticket_events_after_stopping_intake(platform: Platform) -> list[Any]:
    """Stop intake (its outbox is flushed on SIGTERM), then read everything it ever published: exact,
    so "only one" needs no waiting window."""
    assert platform.services["intake"].stop() == 0
    return await read_to_end(platform.infra, platform.topic(Topic.TICKETS))


async def test_posted_ticket_appears_on_the_tickets_topic_as_a_cloudevent(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        response = await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
        assert response.status_code == 201, response.text
        receipt = response.json()
        assert receipt["status"] == "new" and receipt["outcome"] == "created"
        assert (receipt["category"], receipt["priority"]) == ("hardware_fault", "P2")

        [record] = await ticket_events(platform, expect=1)
        headers = headers_of(record)
        assert headers["ce_type"] == CREATED
        assert headers["ce_source"] == "/aftersales/intake"
        assert headers["ce_subject"] == receipt["id"] and record.key == receipt["id"].encode()
        assert headers["ce_specversion"] == "1.0" and headers["content-type"] == "application/json"
        parsed = from_binary_event(
            KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        )
        assert parsed.get_type() == CREATED and parsed.get_id() == headers["ce_id"]
        data = data_of(record)
        assert data["ticket_id"] == receipt["id"] and data["customer_id"] == receipt["customer_id"]
        assert (data["channel"], data["category"], data["priority"]) == ("web", "hardware_fault", "P2")
        assert data["rules_version"] == receipt["rules_version"] and data["under_warranty"] is True
        # A channel's claimed tier is not taken: the tier is the platform's record (standard for a new one).
        assert data["region_code"] == "310000/310100/310104" and data["customer_tier"] == "standard"
        raw = record.value.decode()
        assert "+8613800138000" not in raw and "li.lei@example.com" not in raw  # ids only, no contact data

        ticket = (await client.get(f"/v1/tickets/{receipt['id']}", headers=auth("dev-web-token"))).json()
        assert ticket["timeline"][0]["type"] == "ticket.created" and ticket["external_ref"] == "web-42"
        customer = (
            await client.get(f"/v1/customers/{receipt['customer_id']}", headers=auth("dev-supervisor-token"))
        ).json()
        assert customer["name"] == "Li Lei" and customer["ticket_count"] == 1
        assert [t["id"] for t in customer["tickets"]] == [receipt["id"]]
        assert customer["products"][0]["serial"] == "AC-1"

        # The same person over the phone desk, identified by the same e-mail: same customer, longer history.
        again = ticket_body(channel="phone", customer={**ticket_body()["customer"], "phone": None})
        second = (await client.post("/v1/tickets", json=again, headers=auth("dev-phone-token"))).json()
        assert second["customer_id"] == receipt["customer_id"]
        history = (
            await client.get(f"/v1/customers/{receipt['customer_id']}", headers=auth("dev-admin-token"))
        ).json()
        assert history["ticket_count"] == 2 and {t["channel"] for t in history["tickets"]} == {"web", "phone"}
        metrics = (await client.get("/metrics")).text
        assert (
            'aftersales_tickets_created_total{category="hardware_fault",channel="web",priority="P2"} 1.0'
            in metrics
        )
    created = await all_ticket_events_after_stopping_intake(platform)
    assert sorted((headers_of(r)["ce_type"], data_of(r)["channel"]) for r in created) == [
        (CREATED, "phone"),
        (CREATED, "web"),
    ]


async def test_same_idempotency_key_five_times_concurrently_yields_one_ticket_and_one_event(
    platform: Platform,
) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
        responses = await asyncio.gather(
            *(
                client.post("/v1/tickets", json=ticket_body(), headers={**auth("dev-web-token"), **key})
                for _ in range(5)
            )
        )
        assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 4

        # A later replay answers the same; the key reused for a different request is refused.
        replay = await client.post(
            "/v1/tickets", json=ticket_body(), headers={**auth("dev-web-token"), **key}
        )
        assert (replay.status_code, replay.json()["id"]) == (200, responses[0].json()["id"])
        other = await client.post(
            "/v1/tickets", json=ticket_body(title="Another problem"), headers={**auth("dev-web-token"), **key}
        )
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["message"]

    created = await all_ticket_events_after_stopping_intake(platform)
    assert [headers_of(r)["ce_type"] for r in created] == [CREATED]
    assert await counts(platform) == (1, 1)


BAD_INPUT: list[tuple[str, dict[str, Any], str, int, str]] = [
    ("unknown channel", ticket_body(channel="pigeon"), "dev-admin-token", 422, "channel"),
    (
        "malformed phone",
        ticket_body(customer={**ticket_body()["customer"], "phone": "12345"}),
        "dev-web-token",
        422,
        "customer.phone",
    ),
    (
        "malformed e-mail",
        ticket_body(customer={**ticket_body()["customer"], "email": "li.lei@"}),
        "dev-web-token",
        422,
        "customer.email",
    ),
    ("description too long", ticket_body(description="x" * 10_001), "dev-web-token", 422, "description"),
    (
        "missing title",
        {k: v for k, v in ticket_body().items() if k != "title"},
        "dev-web-token",
        422,
        "title",
    ),
    (
        "missing product",
        {k: v for k, v in ticket_body().items() if k != "product"},
        "dev-web-token",
        422,
        "product",
    ),
    (
        "bad region code",
        ticket_body(customer={**ticket_body()["customer"], "region_code": "Shanghai"}),
        "dev-web-token",
        422,
        "customer.region_code",
    ),
    ("iot without signal", ticket_body(channel="iot"), "dev-iot-token", 422, "iot"),
    ("channel of another token", ticket_body(channel="phone"), "dev-web-token", 403, "channel"),
]


async def test_every_bad_input_is_refused_naming_the_field_and_changes_nothing(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
        first = await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
        assert first.status_code == 201
        await ticket_events(platform, expect=1)
        before = await counts(platform)
        assert before == (1, 1)

        for case, body, token, status, field in BAD_INPUT:
            response = await client.post("/v1/tickets", json=body, headers=auth(token))
            assert response.status_code == status, (case, response.text)
            assert field in response.json()["message"], (case, response.json())
        oversize = json.dumps(ticket_body(description="y" * 300_000))
        response = await client.post(
            "/v1/tickets",
            content=oversize,
            headers={**auth("dev-web-token"), "content-type": "application/json"},
        )
        assert response.status_code == 413 and "256 KB" in response.json()["message"]
        assert (await client.post("/v1/tickets", json=ticket_body())).status_code == 401
        assert (
            await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-technician-token"))
        ).status_code == 403
        listing = await client.get("/v1/tickets", params={"limit": 101}, headers=auth("dev-admin-token"))
        assert listing.status_code == 422 and "limit" in listing.json()["message"]
        listing = await client.get(
            "/v1/tickets", params={"cursor": "garbage"}, headers=auth("dev-admin-token")
        )
        assert listing.status_code == 422 and "cursor" in listing.json()["message"]

    assert await counts(platform) == before
    assert len(await all_ticket_events_after_stopping_intake(platform)) == 1


@pytest.mark.expect_dlq("requests: a request with an invalid e-mail address, and a non-CloudEvent")
async def test_kafka_request_becomes_a_ticket_and_an_invalid_one_goes_to_the_dlq(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    requests_topic = platform.topic(Topic.REQUESTS)
    bad = request_event(
        ticket_body(channel="email", customer={**ticket_body()["customer"], "email": "not-an-address"}),
        key="mail-1",
        source="/gateways/email",
    )
    good = request_event(
        ticket_body(channel="email", external_ref="mail-2"), key="mail-2", source="/gateways/email"
    )
    for event in (bad, good, good):  # the good one twice: a redelivery must not open a second ticket
        await produce(platform.infra, requests_topic, event.value(), key=event.key, headers=event.headers())
    await produce(platform.infra, requests_topic, b"{not json", key=b"mail-3")

    dlq = await read_topic(platform.infra, f"{requests_topic}.dlq", expect=2, timeout_s=30)
    reasons = {headers_of(r).get("ce_id", "raw"): headers_of(r)["dlq_reason"] for r in dlq}
    assert "customer.email" in reasons[bad.id]
    assert "missing header" in reasons["raw"]
    [record] = await ticket_events(platform, expect=1)
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        page = (
            await client.get("/v1/tickets", params={"channel": "email"}, headers=auth("dev-supervisor-token"))
        ).json()
        assert [t["id"] for t in page["items"]] == [data_of(record)["ticket_id"]]
        # Tickets from a Kafka gateway are not any channel token's own tickets.
        mine = (await client.get("/v1/tickets", headers=auth("dev-web-token"))).json()
        assert mine["items"] == []
    # The good request, delivered twice, opened one ticket; the bad ones none.
    created = await all_ticket_events_after_stopping_intake(platform)
    assert [headers_of(r)["ce_type"] for r in created] == [CREATED]
    assert data_of(created[0])["channel"] == "email"
    assert await counts(platform) == (1, 1)


async def test_list_filters_and_cursor_pagination(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
        ids = []
        for i in range(7):
            body = ticket_body(
                title="How to set the timer?" if i % 2 else "Drum is broken",
                description="",
                external_ref=f"r{i}",
            )
            ids.append(
                (await client.post("/v1/tickets", json=body, headers=auth("dev-web-token"))).json()["id"]
            )
        await client.post("/v1/tickets", json=ticket_body(channel="phone"), headers=auth("dev-phone-token"))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"channel": "web", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (
                await client.get("/v1/tickets", params=params, headers=auth("dev-supervisor-token"))
            ).json()
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))  # newest first, each exactly once
        questions = (
            await client.get(
                "/v1/tickets", params={"category": "usage_question"}, headers=auth("dev-admin-token")
            )
        ).json()
        assert {t["id"] for t in questions["items"]} == {ids[i] for i in range(7) if i % 2}
        now = datetime.now(UTC).isoformat()
        future = (
            await client.get("/v1/tickets", params={"created_from": now}, headers=auth("dev-admin-token"))
        ).json()
        assert future["items"] == []
        phone = (await client.get("/v1/tickets", headers=auth("dev-phone-token"))).json()
        assert len(phone["items"]) == 1 and phone["items"][0]["channel"] == "phone"
        assert (await client.get(f"/v1/tickets/{ids[0]}", headers=auth("dev-phone-token"))).status_code == 404
        assert (  # a technician sees the tickets it works on, not this unassigned one
            await client.get(f"/v1/tickets/{ids[0]}", headers=auth("dev-technician-token"))
        ).status_code == 404
        assert (
            await client.get(f"/v1/tickets/{ids[0]}", headers=auth("dev-supervisor-token"))
        ).status_code == 200

        cancelled = await client.post(
            f"/v1/tickets/{ids[0]}/cancel", json={"reason": "duplicate"}, headers=auth("dev-web-token")
        )
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = await client.post(f"/v1/tickets/{ids[0]}/cancel", headers=auth("dev-web-token"))
        assert again.status_code == 409
        not_mine = await client.post(f"/v1/tickets/{ids[1]}/cancel", headers=auth("dev-phone-token"))
        assert not_mine.status_code == 404

    events = await all_ticket_events_after_stopping_intake(platform)
    [event] = [r for r in events if headers_of(r)["ce_type"] == "aftersales.ticket.cancelled.v1"]
    assert data_of(event)["ticket_id"] == ids[0] and data_of(event)["reason"] == "duplicate"
