"""Closing the loop with follow-up and feedback as real processes, driven by the contract events intake
and routing publish: resolve -> callback -> not_resolved -> reopen -> second resolution -> second survey ->
CSAT 1 -> complaint opened automatically -> walked to closed; a reused token changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from followup_events import AROUND_THE_CLOCK, ZONE, send
from harness import Platform, auth, data_of, headers_of, read_to_end, read_topic, unique, wait_until

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import TicketCreated, TicketReopened, WorkOrderResolved

SUPERVISOR = DESK = auth("dev-supervisor-token")  # the follow-up desk works every technician's visits


def resolved(ticket_id: str, round_: int) -> WorkOrderResolved:
    return WorkOrderResolved(
        ticket_id=ticket_id,
        grid_id="grid-3",
        round=round_,
        occurred_at=datetime.now(UTC),
        technician_id="tech-9",
        resolution_code="reflashed_firmware",
        priority=Priority.P2,
        category=Category.SOFTWARE_FAULT,
    )


def of_type(suffix: str) -> Any:
    return lambda r: headers_of(r)["ce_type"].endswith(suffix)


async def _when(value: Any, ok: Any) -> Any:
    result = await value
    return result if ok(result) else None


async def test_resolve_callback_reopen_survey_complaint_closed(platform: Platform) -> None:
    procs = await platform.start_ready("followup", "feedback", CALLBACK_DELAY_S="1", **AROUND_THE_CLOCK)
    followup, feedback = procs["followup"].url, procs["feedback"].url
    followups, feedback_topic = platform.topic(Topic.FOLLOWUPS), platform.topic(Topic.FEEDBACK)
    ticket = unique("T-")
    facts = TicketCreated(
        ticket_id=ticket,
        channel=Channel.PHONE,
        category=Category.SOFTWARE_FAULT,
        priority=Priority.P2,
        customer_id=f"C-{ticket}",
        customer_timezone=ZONE,
        region_code="440000/440300",
        device_type="router",
        product_model=unique("RT-"),
        created_at=datetime.now(UTC),
        rules_version="test",
    )
    await send(platform, Topic.TICKETS, facts, ticket, "/aftersales/intake")
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 1), ticket, "/aftersales/routing")

    # 1. Resolution -> callback scheduled, due by its durable timer -> the customer says: not resolved.
    callback1 = f"V-{ticket}-r1-callback"
    [scheduled] = await read_topic(
        platform.infra, followups, expect=1, where=of_type("followup.scheduled.v1")
    )
    assert data_of(scheduled)["visit_id"] == callback1 and data_of(scheduled)["kind"] == "callback"
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(
            "callback due",
            lambda: _when(
                client.get(f"{followup}/v1/visits/{callback1}", headers=DESK),
                lambda r: r.json()["status"] == "due",
            ),
        )
        outcome = await client.post(
            f"{followup}/v1/visits/{callback1}/outcome", json={"outcome": "not_resolved"}, headers=DESK
        )
        assert outcome.status_code == 200, outcome.text
    [reopen] = await read_topic(platform.infra, followups, expect=1, where=of_type("reopen-requested.v1"))
    assert data_of(reopen)["ticket_id"] == ticket and data_of(reopen)["technician_id"] == "tech-9"

    # 2. Intake reopens, routing resolves round 2 -> a second survey (one per resolution) and a new callback.
    reopened = TicketReopened(
        **facts.model_dump(exclude={"created_at", "rules_version"}),
        reason="not resolved at follow-up",
        reopen_count=1,
        previous_technician_id="tech-9",
        reopened_at=datetime.now(UTC),
    )
    await send(platform, Topic.TICKETS, reopened, ticket, "/aftersales/intake")
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 2), ticket, "/aftersales/routing")
    sent = await read_topic(platform.infra, feedback_topic, expect=2, where=of_type("survey-sent.v1"))
    assert sorted(data_of(r)["round"] for r in sent) == [1, 2]
    assert {r.key for r in sent} == {ticket.encode()}

    async with httpx.AsyncClient(timeout=10) as client:
        surveys = (
            await client.get(f"{feedback}/v1/surveys", params={"ticket_id": ticket}, headers=SUPERVISOR)
        ).json()
        token = next(s["token"] for s in surveys["items"] if s["round"] == 2)

        # 3. CSAT 1 through the link -> SurveySubmitted -> a complaint opens by itself (source low_csat).
        answer = await client.post(
            f"{feedback}/v1/surveys/{token}", json={"csat": 1, "nps": 2, "comment": "came back twice"}
        )
        assert answer.status_code == 200, answer.text
        complaints = await wait_until(
            "low-CSAT complaint",
            lambda: _when(
                client.get(f"{feedback}/v1/complaints", params={"ticket_id": ticket}, headers=SUPERVISOR),
                lambda r: r.json()["count"] == 1,
            ),
        )
        [complaint] = complaints.json()["items"]
        assert (complaint["source"], complaint["state"], complaint["survey_id"]) == (
            "low_csat",
            "received",
            f"SV-{ticket}-r2",
        )
        cid = complaint["id"]

        # 4. Walk it to closed; an illegal step is a 409 and changes nothing.
        step = f"{feedback}/v1/complaints/{cid}/transition"
        illegal = await client.post(step, json={"to": "closed"}, headers=SUPERVISOR)
        assert illegal.status_code == 409
        assert (await client.get(f"{feedback}/v1/complaints/{cid}", headers=SUPERVISOR)).json() == complaint
        for target in ("investigating", "resolution_proposed", "replied", "closed"):
            moved = await client.post(
                step, json={"to": target, "owner_id": "sup-1", "note": target}, headers=SUPERVISOR
            )
            assert moved.status_code == 200, moved.text
            assert moved.json()["state"] == target and moved.json()["owner_id"] == "sup-1"

        # A closed complaint can be reopened; it gets a fresh close deadline.
        reopened_c = await client.post(
            step, json={"to": "investigating", "note": "customer called again"}, headers=SUPERVISOR
        )
        assert reopened_c.status_code == 200 and reopened_c.json()["state"] == "investigating"
        reopened_at = datetime.fromisoformat(reopened_c.json()["deadline_at"])
        assert reopened_at > datetime.fromisoformat(complaint["deadline_at"])  # as instants, not text

        # 5. The reused link: 409, nothing changed.
        reused = await client.post(f"{feedback}/v1/surveys/{token}", json={"csat": 5, "nps": 10})
        assert reused.status_code == 409
        results = (
            await client.get(
                f"{feedback}/v1/surveys/results", params={"ticket_id": ticket}, headers=SUPERVISOR
            )
        ).json()
        assert results["summary"]["submitted"] == 1 and results["summary"]["csat_average"] == 1.0
        assert [(s["round"], s["status"]) for s in results["surveys"]] == [(1, "sent"), (2, "submitted")]

        # 6. The round-2 callback confirms the fix: VisitCompleted lets intake close the ticket.
        callback2 = f"V-{ticket}-r2-callback"
        await wait_until(
            "second callback due",
            lambda: _when(
                client.get(f"{followup}/v1/visits/{callback2}", headers=DESK),
                lambda r: r.json()["status"] == "due",
            ),
        )
        confirm = await client.post(
            f"{followup}/v1/visits/{callback2}/outcome", json={"outcome": "confirmed_resolved"}, headers=DESK
        )
        assert confirm.status_code == 200

    # Both stopped (each flushes its outbox on SIGTERM): the topics now hold all they will, so each
    # event below is checked to have been published exactly once.
    assert procs["followup"].stop() == 0 and procs["feedback"].stop() == 0
    published = await read_to_end(platform.infra, feedback_topic)
    [closed] = [r for r in published if of_type("complaint-closed.v1")(r)]
    assert data_of(closed)["complaint_id"] == cid and data_of(closed)["within_deadline"] is True
    updates = [data_of(r) for r in published if of_type("complaint-updated.v1")(r)]
    [again] = [u for u in updates if u["change"] == "reopened"]
    assert (again["previous_state"], again["state"]) == ("closed", "investigating")
    opened = [data_of(r)["source"] for r in published if of_type("complaint-opened.v1")(r)]
    assert opened == ["low_csat"]
    submitted = [data_of(r) for r in published if of_type("survey-submitted.v1")(r)]
    assert [(d["csat"], d["round"]) for d in submitted] == [(1, 2)]
    completed = [
        data_of(r) for r in await read_to_end(platform.infra, followups) if of_type("completed.v1")(r)
    ]
    assert [(d["round"], d["outcome"]) for d in completed] == [(1, "not_resolved"), (2, "confirmed_resolved")]
