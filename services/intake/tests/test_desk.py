"""The service desk on tickets, in-process: internal notes and messages to the customer on a ticket's
conversation (a channel never sees notes, events carry ids only), a supervisor's corrections, merging a
duplicate, closing and reopening by hand (version-guarded, 4xx naming the field)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.intake import desk, domain
from aftersales.intake.app import Settings, build
from aftersales.intake.desk import Author
from aftersales.intake.domain import MAX_CONVERSATION
from aftersales.intake.rules import Classification
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.events import WorkOrderAccepted, WorkOrderPending
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.errors import InvalidRequest
from aftersales.shared.testing import FAST, ServiceUnderTest, contract_event, in_process, work_order_assigned

SUP, WEB, PHONE, TECH = "dev-supervisor-token", "dev-web-token", "dev-phone-token", "dev-technician-token"
UPDATED, CLOSED = "aftersales.ticket.updated.v1", "aftersales.ticket.closed.v1"
CANCELLED, REOPENED = "aftersales.ticket.cancelled.v1", "aftersales.ticket.reopened.v1"
POSTED, MERGED = "aftersales.ticket.message-posted.v1", "aftersales.ticket.duplicate-merged.v1"
ROUTING = "/aftersales/routing"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def open_ticket(
    svc: ServiceUnderTest, *, email: str = "li.lei@example.com", title: str = "Broken"
) -> str:
    body = {
        "channel": "web",
        "customer": {"name": "Li Lei", "email": email, "region_code": "310000"},
        "product": {"device_type": "washer", "serial": "W-1"},
        "title": title,
        "description": "drum does not turn",
    }
    r = await svc.http.post("/v1/tickets", json=body, headers=svc.auth(WEB))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def read(svc: ServiceUnderTest, ticket_id: str, token: str = SUP) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/tickets/{ticket_id}", headers=svc.auth(token))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def conversation(svc: ServiceUnderTest, ticket_id: str, token: str, **params: Any) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/tickets/{ticket_id}/conversation", params=params, headers=svc.auth(token))
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


async def test_notes_stay_internal_messages_and_replies_reach_the_channel(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    url = f"/v1/tickets/{tid}"
    # a technician who does not work on it, and a channel, may not write
    r = await intake.http.post(f"{url}/notes", json={"text": "x"}, headers=intake.auth(TECH))
    assert r.status_code == 404
    r = await intake.http.post(f"{url}/notes", json={"text": "x"}, headers=intake.auth(WEB))
    assert r.status_code == 403
    # In the order routing sends them, each later than the one before: the read model passes over an
    # event older than the last that moved the status (a redrive). Built before the assignment, `work`
    # was older than it whenever the clock crossed a millisecond in between (a flaky failure).
    t0 = datetime.now(UTC)
    work = {"ticket_id": tid, "grid_id": "grid-7", "technician_id": "tech-demo"}
    await intake.deliver(work_order_assigned(tid, technician_id="tech-demo", occurred_at=t0))
    accepted = WorkOrderAccepted(**work, occurred_at=t0 + timedelta(milliseconds=1))
    await intake.deliver(contract_event(accepted, source=ROUTING))
    pending = WorkOrderPending(**work, occurred_at=t0 + timedelta(milliseconds=2))
    await intake.deliver(contract_event(pending, source=ROUTING))

    r = await intake.http.post(
        f"{url}/notes", json={"text": "customer sounds angry"}, headers=intake.auth(TECH)
    )
    assert r.status_code == 201 and r.json()["kind"] == "note" and r.json()["author"] == "tech-demo", r.text
    r = await intake.http.post(
        f"{url}/messages", json={"text": "Please send a photo"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 201, r.text
    message_id = r.json()["id"]
    [posted] = await intake.published_exactly(POSTED)
    assert posted.data == {
        "ticket_id": tid,
        "message_id": message_id,
        "author_role": "supervisor",
        "posted_at": posted.data["posted_at"],
    }
    r = await intake.http.post(
        f"{url}/customer-reply", json={"message": "Photo sent"}, headers=intake.auth(WEB)
    )
    assert r.status_code == 200, r.text

    staff = await conversation(intake, tid, SUP)
    assert [(e["kind"], e["text"]) for e in staff["items"]] == [
        ("note", "customer sounds angry"),
        ("message", "Please send a photo"),
        ("customer_reply", "Photo sent"),
    ]
    channel = await conversation(intake, tid, WEB)
    assert [e["kind"] for e in channel["items"]] == ["message", "customer_reply"]
    assert (await intake.http.get(f"{url}/conversation", headers=intake.auth(PHONE))).status_code == 404

    first = await conversation(intake, tid, WEB, limit=1)
    assert [e["kind"] for e in first["items"]] == ["message"] and first["next_cursor"]
    rest = await conversation(intake, tid, WEB, cursor=first["next_cursor"], limit=5)
    assert [e["kind"] for e in rest["items"]] == ["customer_reply"] and rest["next_cursor"] is None

    kinds = [e["type"] for e in (await read(intake, tid))["timeline"]]
    assert "ticket.note_added" in kinds and "ticket.message_posted" in kinds
    channel_kinds = [e["type"] for e in (await read(intake, tid, WEB))["timeline"]]
    assert "ticket.note_added" not in channel_kinds and "ticket.message_posted" in channel_kinds

    r = await intake.http.post(f"{url}/notes", json={"text": "x" * 4001}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text", r.text
    r = await intake.http.get(f"{url}/conversation", params={"cursor": "abc"}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["field"] == "cursor"


def test_a_full_conversation_takes_no_more_notes() -> None:
    request = TicketRequest.model_validate(
        {
            "channel": "web",
            "customer": {"name": "Han Meimei", "email": "han@example.com", "region_code": "310000"},
            "product": {"device_type": "washer"},
            "title": "Drum is broken",
        }
    )
    ticket = domain.new_ticket(
        request,
        ticket_id="T-1",
        customer_id="C-1",
        decided=Classification(Category.HARDWARE_FAULT, Priority.P3, "v1", ()),
        warranty=None,
        caller="http:web",
        source="http",
        key=None,
        fingerprint="f",
        now=datetime.now(UTC),
    )
    full = replace(ticket, conversation_seq=MAX_CONVERSATION)
    with pytest.raises(InvalidRequest) as refused:
        desk.noted(full, text="one more", by=Author("supervisor-1", "supervisor"), now=datetime.now(UTC))
    assert refused.value.field == "text"


async def test_a_supervisor_corrects_priority_and_category_guarded_by_version(
    intake: ServiceUnderTest,
) -> None:
    tid = await open_ticket(intake)
    before = await read(intake, tid)
    priority = "P1" if before["priority"] != "P1" else "P2"
    body = {"priority": priority, "category": "installation", "reason": "misread"}
    r = await intake.http.patch(f"/v1/tickets/{tid}", json=body, headers=intake.auth(WEB))
    assert r.status_code == 403
    stale = {"If-Match": f'"{before["version"] + 5}"'}
    r = await intake.http.patch(f"/v1/tickets/{tid}", json=body, headers={**intake.auth(SUP), **stale})
    assert r.status_code == 409 and r.json()["field"] == "If-Match"
    r = await intake.http.patch(
        f"/v1/tickets/{tid}", json=body, headers={**intake.auth(SUP), "If-Match": "three"}
    )
    assert r.status_code == 422 and r.json()["field"] == "If-Match"
    r = await intake.http.patch(
        f"/v1/tickets/{tid}", json=body, headers={**intake.auth(SUP), "If-Match": f'"{before["version"]}"'}
    )
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["priority"] == priority and after["category"] == "installation"
    assert after["version"] == before["version"] + 1 and r.headers["ETag"] == f'"{after["version"]}"'
    [changed] = await intake.published_exactly(
        UPDATED, where=lambda e: e.data["change"] == "priority_changed"
    )
    assert changed.data["priority"] == priority
    [details] = await intake.published_exactly(UPDATED, where=lambda e: e.data["change"] == "details_changed")
    assert details.data["category"] == "installation"
    assert after["timeline"][-1]["type"] == "ticket.corrected"
    # the same correction again changes nothing and publishes nothing
    r = await intake.http.patch(f"/v1/tickets/{tid}", json=body, headers=intake.auth(SUP))
    assert r.status_code == 200 and r.json()["version"] == after["version"]
    r = await intake.http.patch(
        f"/v1/tickets/{tid}", json={"priority": "P9", "reason": "x"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"


async def test_a_duplicate_is_merged_into_its_original_once(intake: ServiceUnderTest) -> None:
    original, duplicate = await open_ticket(intake, title="first"), await open_ticket(intake, title="again")
    other = await open_ticket(intake, email="someone.else@example.com")
    merge = f"/v1/tickets/{duplicate}/merge"
    r = await intake.http.post(merge, json={"original_ticket_id": duplicate}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["field"] == "original_ticket_id"
    r = await intake.http.post(merge, json={"original_ticket_id": other}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["field"] == "original_ticket_id"
    r = await intake.http.post(merge, json={"original_ticket_id": "T-nope"}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["field"] == "original_ticket_id"

    for _ in range(2):  # repeated: the same outcome, nothing published twice
        r = await intake.http.post(merge, json={"original_ticket_id": original}, headers=intake.auth(SUP))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (
            doc["status"] == "closed" and doc["close_reason"] == "merged" and doc["merged_into"] == original
        )
    [cancelled] = await intake.published_exactly(CANCELLED)
    assert cancelled.data["ticket_id"] == duplicate
    [merged] = await intake.published_exactly(MERGED)
    assert merged.data["original_ticket_id"] == original and merged.data["merged_by"] == "supervisor-1"
    notes = [e for e in (await read(intake, original))["timeline"] if e["type"] == "ticket.duplicate_merged"]
    assert [e["duplicate_ticket_id"] for e in notes] == [duplicate]

    r = await intake.http.post(
        f"/v1/tickets/{duplicate}/reopen", json={"reason": "x"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 409 and r.json()["field"] == "status"
    r = await intake.http.post(
        merge.replace(duplicate, other), json={"original_ticket_id": duplicate}, headers=intake.auth(SUP)
    )
    assert r.status_code in (409, 422)


async def test_close_and_reopen_by_hand(intake: ServiceUnderTest) -> None:
    tid = await open_ticket(intake)
    r = await intake.http.post(f"/v1/tickets/{tid}/reopen", json={"reason": "x"}, headers=intake.auth(SUP))
    assert r.status_code == 409 and r.json()["field"] == "status"  # not resolved or closed
    r = await intake.http.post(f"/v1/tickets/{tid}/close", json={}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    r = await intake.http.post(
        f"/v1/tickets/{tid}/close",
        json={"reason": "call 13800138000: customer withdrew"},
        headers=intake.auth(SUP),
    )
    assert (
        r.status_code == 200
        and r.json()["status"] == "closed"
        and r.json()["close_reason"] == "closed_by_agent"
    )
    [closed] = await intake.published_exactly(CLOSED)
    assert closed.data["reason"] == "closed_by_agent"
    r = await intake.http.post(f"/v1/tickets/{tid}/close", json={"reason": "again"}, headers=intake.auth(SUP))
    assert r.status_code == 409
    r = await intake.http.post(
        f"/v1/tickets/{tid}/reopen", json={"reason": "it broke again"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 200 and r.json()["status"] == "reopened" and r.json()["reopen_count"] == 1
    [reopened] = await intake.published_exactly(REOPENED)
    assert reopened.data["reopen_count"] == 1 and reopened.data["reason"] == "it broke again"
    stored = str(await intake.runtime.db["tickets"].find_one({"_id": tid}))
    assert "13800138000" not in stored
