"""Feedback as a real process on real Kafka + FerretDB: one survey per resolution, signed single-use
tokens, complaints from every source through the whole workflow, overdue escalation, classification."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import (
    TEST_SURVEY_SIGNING_KEY,
    Platform,
    auth,
    data_of,
    headers_of,
    produce,
    read_to_end,
    unique,
    wait_until,
)
from pydantic import BaseModel

from aftersales.feedback import tokens
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import TicketCreated, WorkOrderResolved
from aftersales.shared.envelope import new_event

SUPERVISOR = auth("dev-supervisor-token")


async def send(platform: Platform, topic: Topic, model: BaseModel, ticket_id: str) -> None:
    event = new_event(model, source="/test", subject=ticket_id)
    await produce(
        platform.infra, platform.topic(topic), event.value(), key=event.key, headers=event.headers()
    )


def created(ticket_id: str, category: Category, product_model: str) -> TicketCreated:
    return TicketCreated(
        ticket_id=ticket_id,
        channel=Channel.WEB,
        category=category,
        priority=Priority.P3,
        customer_id=f"C-{ticket_id}",
        region_code="310000",
        device_type="fridge",
        product_model=product_model,
        created_at=datetime.now(UTC),
        rules_version="test",
    )


def resolved(ticket_id: str, round_: int) -> WorkOrderResolved:
    return WorkOrderResolved(
        ticket_id=ticket_id,
        grid_id="grid-1",
        round=round_,
        occurred_at=datetime.now(UTC),
        technician_id="tech-1",
        resolution_code="fixed",
        priority=Priority.P3,
        category=Category.SOFTWARE_FAULT,
    )


async def get_json(client: httpx.AsyncClient, url: str, **params: Any) -> Any:
    response = await client.get(url, params=params, headers=SUPERVISOR)
    assert response.status_code == 200, response.text
    return response.json()


async def _when(value: Any, ok: Any) -> Any:
    result = await value
    return result if ok(result) else None


async def test_surveys_tokens_and_complaint_sources(platform: Platform) -> None:
    procs = await platform.start_ready("feedback", COMPLAINT_ACK_H="0.0006")  # acknowledge within ~2 s
    url = procs["feedback"].url
    ticket, model = unique("T-"), unique("FR-")
    await send(platform, Topic.TICKETS, created(ticket, Category.SOFTWARE_FAULT, model), ticket)
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 1), ticket)
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 1), ticket)  # a duplicate resolution report

    async with httpx.AsyncClient(timeout=10) as client:
        listed = await wait_until(
            "survey sent",
            lambda: _when(get_json(client, f"{url}/v1/surveys", ticket_id=ticket), lambda b: b["count"]),
        )
        [survey] = listed["items"]
        token = survey["token"]
        assert survey["link"].endswith(token) and survey["round"] == 1
        # The links are privileged: no token, no list; a channel may not read them.
        assert (await client.get(f"{url}/v1/surveys", params={"ticket_id": ticket})).status_code == 401
        channel = await client.get(
            f"{url}/v1/surveys", params={"ticket_id": ticket}, headers=auth("dev-web-token")
        )
        assert channel.status_code == 403

        # Forged, tampered, expired tokens and bad answers: clear 4xx, nothing changed.
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        assert (await client.post(f"{url}/v1/surveys/{forged}", json={"csat": 5})).status_code == 403
        expired = tokens.sign(
            survey["survey_id"], datetime.now(UTC) - timedelta(minutes=1), TEST_SURVEY_SIGNING_KEY.encode()
        )
        gone = await client.post(f"{url}/v1/surveys/{expired}", json={"csat": 5})
        assert gone.status_code == 410 and gone.json()["error"] == "token_expired"
        bad = await client.post(f"{url}/v1/surveys/{token}", json={"csat": 6, "nps": 3})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "csat"
        long = await client.post(f"{url}/v1/surveys/{token}", json={"csat": 3, "comment": "x" * 2001})
        assert long.status_code == 422 and long.json()["errors"][0]["field"] == "comment"
        still = (await get_json(client, f"{url}/v1/surveys", ticket_id=ticket))["items"][0]
        assert still["status"] == "sent" and still["csat"] is None

        answer = await client.post(
            f"{url}/v1/surveys/{token}", json={"csat": 4, "nps": 9, "comment": "quick"}
        )
        assert answer.status_code == 200, answer.text
        reused = await client.post(f"{url}/v1/surveys/{token}", json={"csat": 1, "nps": 0})
        assert reused.status_code == 409 and reused.json()["error"] == "survey_already_answered"
        results = await get_json(client, f"{url}/v1/surveys/results", ticket_id=ticket)
        assert results["summary"] == {
            "sent": 1,
            "submitted": 1,
            "response_rate": 1.0,
            "csat_average": 4.0,
            "nps": 100.0,
        }
        assert results["surveys"][0]["comment"] == "quick" and results["surveys"][0]["token"] is None

        # Complaints from the API: idempotent by Idempotency-Key, invalid input names the field.
        body = {"product_model": model, "summary": "noisy compressor", "category": "hardware_fault"}
        headers = {**SUPERVISOR, "Idempotency-Key": "k-1"}
        first = await client.post(f"{url}/v1/complaints", json=body, headers=headers)
        retry = await client.post(f"{url}/v1/complaints", json=body, headers=headers)
        assert (first.status_code, retry.status_code) == (201, 200)
        assert first.json()["id"] == retry.json()["id"] and first.json()["scope"] == "individual"
        invalid = await client.post(
            f"{url}/v1/complaints", json={**body, "category": "weather"}, headers=SUPERVISOR
        )
        assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "category"

    # From the complaint channel: a ticket with category complaint about the same product model.
    channel_ticket = unique("T-")
    await send(platform, Topic.TICKETS, created(channel_ticket, Category.COMPLAINT, model), channel_ticket)
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(
            "channel complaint",
            lambda: _when(
                get_json(client, f"{url}/v1/complaints", ticket_id=channel_ticket, source="channel"),
                lambda b: b["count"],
            ),
        )
        # The third complaint about one product model within the window is common-cause (共性) ...
        third = await client.post(
            f"{url}/v1/complaints", json={**body, "summary": "again"}, headers=SUPERVISOR
        )
        assert third.status_code == 201 and third.json()["scope"] == "common_cause"
        # ... and the earlier ones are reclassified.
        await wait_until(
            "all three common-cause",
            lambda: _when(
                get_json(client, f"{url}/v1/complaints", scope="common_cause"),
                lambda b: b["count"] == 3 and {c["product_model"] for c in b["items"]} == {model},
            ),
        )
        # Nobody acknowledged them in time: escalated by the durable timer.
        escalated = await wait_until(
            "escalated complaints",
            lambda: _when(
                get_json(client, f"{url}/v1/complaints", escalated="true"), lambda b: b["count"] == 3
            ),
        )
        assert all(c["state"] == "received" for c in escalated["items"])
        metrics = (await client.get(f"{url}/metrics")).text
    # Stopped (the outbox flushed on SIGTERM), the topic holds all feedback ever published: exact counts.
    assert procs["feedback"].stop() == 0
    published = await read_to_end(platform.infra, platform.topic(Topic.FEEDBACK))
    updates = [data_of(r) for r in published if headers_of(r)["ce_type"].endswith("complaint-updated.v1")]
    assert Counter(u["change"] for u in updates) == {"overdue": 3, "reclassified": 2}
    assert all(u["escalated"] for u in updates if u["change"] == "overdue")
    sent = [r for r in published if headers_of(r)["ce_type"].endswith("survey-sent.v1")]
    assert len(sent) == 1  # the duplicate resolution did not send a second survey
    assert (
        "aftersales_surveys_sent_total 1.0" in metrics and "aftersales_surveys_submitted_total 1.0" in metrics
    )
    assert 'aftersales_complaints_total{scope="common_cause",source="api"} 1.0' in metrics
    assert 'aftersales_complaints_open{state="received"} 3.0' in metrics
    assert 'aftersales_complaints_overdue_total{deadline="step"} 3.0' in metrics
    assert (
        'aftersales_csat_bucket{le="4.0"} 1.0' in metrics
        and 'aftersales_csat_bucket{le="3.0"} 0.0' in metrics
    )
