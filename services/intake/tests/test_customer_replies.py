"""A customer's reply on a ticket's thread (`request.customer-replied` on the requests topic, from the mail
gateway), in-process: applied once however often it comes, moving a ticket that waits on the customer
back to work and otherwise kept on the ticket; refused (parked with the reason) for an unknown ticket or
a sender who is not the ticket's customer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aftersales.intake.app import Settings, build
from aftersales.shared.contracts.events import WorkOrderAccepted, WorkOrderPending
from aftersales.shared.contracts.requests import CustomerReplyRequest
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, contract_event, in_process, work_order_assigned

UPDATED = "aftersales.ticket.updated.v1"
ROUTING = "/aftersales/routing"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def open_ticket(svc: ServiceUnderTest, email: str) -> str:
    body = {
        "channel": "web",
        "customer": {"name": "Li Lei", "email": email, "region_code": "310000"},
        "product": {"device_type": "unknown"},
        "title": "Air conditioner is broken",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth("dev-web-token"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def reply(ticket_id: str, key: str, **fields: Any) -> Any:
    defaults: dict[str, Any] = {
        "ticket_id": ticket_id,
        "channel": "email",
        "text": "Photos attached, call me at +8613800138000",
        "email": "li.lei@example.com",
        "idempotency_key": key,
        "occurred_at": datetime.now(UTC),
    }
    data = CustomerReplyRequest(**{**defaults, **fields})
    return new_event(data, source="/aftersales/notify", subject=ticket_id)


async def ticket(svc: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/tickets/{ticket_id}", headers=svc.auth("dev-supervisor-token"))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def test_a_reply_moves_a_waiting_ticket_back_to_work_once(intake: ServiceUnderTest) -> None:
    ticket_id = await open_ticket(intake, "Li.Lei@example.com")
    await intake.deliver(work_order_assigned(ticket_id))
    # after the assignment: the read model skips an event older than the last one it applied
    work: dict[str, Any] = {"ticket_id": ticket_id, "grid_id": "grid-7", "occurred_at": datetime.now(UTC)}
    await intake.deliver(contract_event(WorkOrderAccepted(**work, technician_id="tech-42"), source=ROUTING))
    await intake.deliver(contract_event(WorkOrderPending(**work, technician_id="tech-42"), source=ROUTING))
    assert (await ticket(intake, ticket_id))["status"] == "pending_customer"

    await intake.deliver(reply(ticket_id, "mail-1"), copies=2)
    [replied] = await intake.published.wait_for(UPDATED, lambda e: e.data["change"] == "customer_replied")
    assert replied.subject == ticket_id
    doc = await ticket(intake, ticket_id)
    assert doc["status"] == "in_progress"
    assert [e["type"] for e in doc["timeline"]].count("ticket.customer_replied") == 1

    # a later mail on the thread, the ticket no longer waiting: kept on the ticket, status unchanged
    await intake.deliver(reply(ticket_id, "mail-2", text="Any news?"), copies=2)
    doc = await ticket(intake, ticket_id)
    assert doc["status"] == "in_progress"
    assert [e["type"] for e in doc["timeline"]].count("ticket.customer_wrote") == 1
    replies = [e for e in intake.published.of_type(UPDATED) if e.data["change"] == "customer_replied"]
    assert len(replies) == 1
    assert intake.dead_letters == []


async def test_replies_to_unknown_tickets_or_from_strangers_are_parked(intake: ServiceUnderTest) -> None:
    ticket_id = await open_ticket(intake, "li.lei@example.com")
    await intake.deliver(reply("T-nonexistent", "mail-3"))
    await intake.deliver(reply(ticket_id, "mail-4", email="mallory@example.com"))
    reasons = [headers.get("dlq_reason", "") for headers in intake.dead_letters]
    assert len(reasons) == 2, intake.dead_letters
    assert "T-nonexistent not found" in reasons[0] and "not ticket" in reasons[1]
    doc = await ticket(intake, ticket_id)
    assert "ticket.customer_wrote" not in [e["type"] for e in doc["timeline"]]
