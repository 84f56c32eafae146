"""Intake as a real process: assignment, follow-up and feedback events drive each ticket's status and
timeline; a follow-up reopens or closes the ticket; a work order handed back to the queue takes the
technician off the ticket; redeliveries and cross-topic overtaking are harmless."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from harness import Platform, auth, data_of, headers_of, mongo, read_to_end, wait_until
from pydantic import BaseModel
from test_intake import ticket_body

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import (
    ReopenRequested,
    SlaWarning,
    SurveySubmitted,
    VisitCompleted,
    VisitOutcome,
    WorkOrderAccepted,
    WorkOrderAssigned,
    WorkOrderPending,
    WorkOrderQueued,
    WorkOrderResolved,
)
from aftersales.shared.envelope import CloudEvent, new_event


def event_of(model: BaseModel, source: str, ticket_id: str) -> CloudEvent:
    return new_event(model, source=source, subject=ticket_id)


async def test_downstream_events_drive_status_timeline_reopen_and_close(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()

    async def send(topic: Topic, *events: CloudEvent) -> None:
        for event in events:
            await producer.send_and_wait(
                platform.topic(topic),
                event.value(),
                key=event.key,
                headers=[(k, v.encode()) for k, v in event.headers().items()],
            )

    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
            created = (
                await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
            ).json()
            tid = created["id"]
            now = datetime.now(UTC)
            routing = "/aftersales/routing"
            common = {"ticket_id": tid, "grid_id": "G-310104", "occurred_at": now}
            assigned = event_of(
                WorkOrderAssigned(
                    **common,
                    technician_id="tech-7",
                    tier=1,
                    via="direct",
                    priority="P2",
                    category="hardware_fault",
                ),
                routing,
                tid,
            )
            await send(
                Topic.ASSIGNMENTS,
                assigned,
                event_of(WorkOrderAccepted(**common, technician_id="tech-7"), routing, tid),
                event_of(
                    WorkOrderPending(**common, technician_id="tech-7", reason="waiting for photos"),
                    routing,
                    tid,
                ),
            )

            # Staff read the ticket's internals; a channel's view has no technician ids (tests/security).
            async def ticket(token: str = "dev-supervisor-token") -> dict[str, Any]:
                return (await client.get(f"/v1/tickets/{tid}", headers=auth(token))).json()

            async def status_is(status: str) -> dict[str, Any] | None:
                doc = await ticket()
                return doc if doc["status"] == status else None

            doc = await wait_until("pending_customer", lambda: status_is("pending_customer"))
            assert doc["technician_id"] == "tech-7"
            reply = await client.post(
                f"/v1/tickets/{tid}/customer-reply",
                json={"message": "photos attached"},
                headers=auth("dev-web-token"),
            )
            assert reply.status_code == 200 and reply.json()["status"] == "in_progress"
            again = await client.post(f"/v1/tickets/{tid}/customer-reply", headers=auth("dev-web-token"))
            assert again.status_code == 409

            resolved = event_of(
                WorkOrderResolved(
                    **common,
                    technician_id="tech-7",
                    resolution_code="replaced-fan",
                    priority="P2",
                    category="hardware_fault",
                ),
                routing,
                tid,
            )
            marker = event_of(
                SlaWarning(**common, clock="resolution", threshold_pct=80, due_at=now), routing, tid
            )
            await send(Topic.ASSIGNMENTS, resolved, assigned, marker)  # `assigned` again: a redelivery

            async def marker_applied() -> dict[str, Any] | None:
                doc = await ticket()
                return doc if any(e.get("event_id") == marker.id for e in doc["timeline"]) else None

            doc = await wait_until("the marker after the duplicate", marker_applied)
            assert doc["status"] == "resolved"  # the redelivered `assigned` changed nothing
            kinds = [e["type"] for e in doc["timeline"]]
            assert kinds == [
                "ticket.created",
                "assignment.assigned",
                "assignment.accepted",
                "assignment.pending",
                "ticket.customer_replied",
                "assignment.resolved",
                "assignment.sla-warning",
            ]
            assert (
                doc["timeline"][1]["technician_id"] == "tech-7" and doc["timeline"][1]["source"] == "routing"
            )

            followup = "/aftersales/followup"
            visit = {"visit_id": "V-1", "ticket_id": tid, "kind": "callback", "occurred_at": now}
            await send(
                Topic.FOLLOWUPS, event_of(ReopenRequested(**visit, reason="still noisy"), followup, tid)
            )
            doc = await wait_until("reopened", lambda: status_is("reopened"))
            assert doc["reopen_count"] == 1 and doc["last_technician_id"] == "tech-7"

            round2 = {**common, "round": 2}
            await send(
                Topic.ASSIGNMENTS,
                event_of(
                    WorkOrderAssigned(
                        **round2,
                        technician_id="tech-7",
                        tier=1,
                        via="previous_technician",
                        priority="P2",
                        category="hardware_fault",
                    ),
                    routing,
                    tid,
                ),
                event_of(
                    WorkOrderResolved(
                        **round2,
                        technician_id="tech-7",
                        resolution_code="replaced-motor",
                        priority="P2",
                        category="hardware_fault",
                    ),
                    routing,
                    tid,
                ),
            )
            await wait_until("resolved again", lambda: status_is("resolved"))
            await send(
                Topic.FOLLOWUPS,
                event_of(
                    VisitCompleted(
                        **{**visit, "visit_id": "V-2"}, outcome=VisitOutcome.CONFIRMED_RESOLVED, round=2
                    ),
                    followup,
                    tid,
                ),
            )
            await send(
                Topic.FEEDBACK,
                event_of(
                    SurveySubmitted(
                        survey_id="S-1",
                        ticket_id=tid,
                        round=2,
                        technician_id="tech-7",
                        csat=5,
                        nps=9,
                        occurred_at=now,
                    ),
                    "/aftersales/feedback",
                    tid,
                ),
            )

            async def surveyed() -> dict[str, Any] | None:
                doc = await ticket()
                return (
                    doc
                    if doc["status"] == "closed"
                    and doc["timeline"][-1]["type"] == "feedback.survey-submitted"
                    else None
                )

            doc = await wait_until("closed and surveyed", surveyed)
            assert doc["timeline"][-1]["csat"] == 5 and doc["timeline"][-1]["source"] == "feedback"
            assert [e["outcome"] for e in doc["timeline"] if e["type"] == "followup.completed"] == [
                "confirmed_resolved"
            ]

            # Object-level authorization: another channel's token and a technician who never worked on it
            # do not see it; supervisors do.
            assert (
                await client.get(f"/v1/tickets/{tid}", headers=auth("dev-phone-token"))
            ).status_code == 404
            assert (
                await client.get(f"/v1/tickets/{tid}", headers=auth("dev-technician-token"))
            ).status_code == 404
            assert (
                await client.get(f"/v1/tickets/{tid}", headers=auth("dev-supervisor-token"))
            ).status_code == 200
            cancel = await client.post(f"/v1/tickets/{tid}/cancel", headers=auth("dev-web-token"))
            assert cancel.status_code == 409
            metrics = (await client.get("/metrics")).text
            assert "aftersales_tickets_reopened_total 1.0" in metrics
    finally:
        await producer.stop()

    # Everything intake published for this ticket, once each and in order (stopped first: exact).
    assert intake.stop() == 0
    events = await read_to_end(platform.infra, platform.topic(Topic.TICKETS))
    assert [headers_of(r)["ce_type"] for r in events] == [
        "aftersales.ticket.created.v1",
        "aftersales.ticket.updated.v1",
        "aftersales.ticket.reopened.v1",
        "aftersales.ticket.closed.v1",
    ]
    updated, reopened, closed = (data_of(r) for r in events[1:])
    assert updated["change"] == "customer_replied"
    assert reopened["previous_technician_id"] == "tech-7" and reopened["reopen_count"] == 1
    assert reopened["reason"] == "still noisy"
    assert (reopened["customer_id"], reopened["category"], reopened["region_code"]) == (
        created["customer_id"],
        "hardware_fault",
        "310000/310100/310104",
    )
    assert closed["reason"] == "confirmed_resolved"


async def test_a_followup_read_before_the_resolution_it_follows_still_reopens(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()

    async def send(topic: Topic, event: CloudEvent) -> None:
        headers = [(k, v.encode()) for k, v in event.headers().items()]
        await producer.send_and_wait(platform.topic(topic), event.value(), key=event.key, headers=headers)

    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
            tid = (
                await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
            ).json()["id"]
            now = datetime.now(UTC)
            common = {"ticket_id": tid, "grid_id": "G-1", "occurred_at": now}
            routing = "/aftersales/routing"
            work = {"priority": "P2", "category": "hardware_fault"}
            await send(
                Topic.ASSIGNMENTS,
                event_of(
                    WorkOrderAssigned(**common, technician_id="tech-3", tier=1, via="direct", **work),
                    routing,
                    tid,
                ),
            )
            visit = {"visit_id": "V-9", "ticket_id": tid, "kind": "callback", "occurred_at": now}
            await send(
                Topic.FOLLOWUPS,
                event_of(ReopenRequested(**visit, reason="fan still loud"), "/aftersales/followup", tid),
            )

            async def timeline_has(kind: str) -> dict[str, Any] | None:
                doc = (await client.get(f"/v1/tickets/{tid}", headers=auth("dev-supervisor-token"))).json()
                return doc if any(e["type"] == kind for e in doc["timeline"]) else None

            doc = await wait_until(
                "the early reopen request noted", lambda: timeline_has("followup.reopen-requested")
            )
            assert (
                doc["status"] == "assigned"
            )  # nothing to reopen yet: routing's resolution is still in flight
            await send(
                Topic.ASSIGNMENTS,
                event_of(
                    WorkOrderResolved(**common, technician_id="tech-3", resolution_code="fix", **work),
                    routing,
                    tid,
                ),
            )
            doc = await wait_until("the resolution", lambda: timeline_has("assignment.resolved"))
            assert (doc["status"], doc["reopen_count"], doc["last_technician_id"]) == (
                "reopened",
                1,
                "tech-3",
            )
    finally:
        await producer.stop()

    assert intake.stop() == 0
    events = await read_to_end(platform.infra, platform.topic(Topic.TICKETS))
    assert [headers_of(r)["ce_type"] for r in events] == [
        "aftersales.ticket.created.v1",
        "aftersales.ticket.reopened.v1",
    ]
    reopened = data_of(events[1])
    assert (reopened["reason"], reopened["previous_technician_id"]) == ("fan still loud", "tech-3")


async def test_a_work_order_handed_back_to_the_queue_leaves_the_ticket_without_technician(
    platform: Platform,
) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()

    async def send(event: CloudEvent) -> None:
        headers = [(k, v.encode()) for k, v in event.headers().items()]
        await producer.send_and_wait(
            platform.topic(Topic.ASSIGNMENTS), event.value(), key=event.key, headers=headers
        )

    try:
        async with httpx.AsyncClient(base_url=intake.url, timeout=20) as client:
            tid = (
                await client.post("/v1/tickets", json=ticket_body(), headers=auth("dev-web-token"))
            ).json()["id"]
            t0, routing = datetime.now(UTC), "/aftersales/routing"
            work = {"ticket_id": tid, "grid_id": "G-1", "priority": "P2", "category": "hardware_fault"}

            def assigned(technician: str, at: datetime) -> CloudEvent:
                data = WorkOrderAssigned(
                    **work, technician_id=technician, tier=1, via="direct", occurred_at=at
                )
                return event_of(data, routing, tid)

            handed_back = event_of(
                WorkOrderQueued(
                    **work, reason="handed back: van broke down", occurred_at=t0 + timedelta(seconds=1)
                ),
                routing,
                tid,
            )
            await send(assigned("tech-5", t0))
            await send(handed_back)

            async def ticket() -> dict[str, Any]:
                return (await client.get(f"/v1/tickets/{tid}", headers=auth("dev-supervisor-token"))).json()

            async def last_is(kind: str) -> dict[str, Any] | None:
                doc = await ticket()
                return doc if doc["timeline"][-1]["type"] == kind else None

            doc = await wait_until("the hand-back applied", lambda: last_is("assignment.queued"))
            assert (doc["status"], doc["technician_id"], doc["last_technician_id"]) == (
                "new",
                None,
                "tech-5",
            )

            # Taken from the queue by another technician; then the hand-back redelivered (its marker
            # is its own document by now) and a marker event behind it.
            await send(assigned("tech-6", t0 + timedelta(seconds=2)))
            await send(handed_back)
            marker = event_of(
                SlaWarning(
                    **{k: work[k] for k in ("ticket_id", "grid_id")},
                    clock="resolution",
                    threshold_pct=50,
                    due_at=t0 + timedelta(hours=3),
                    occurred_at=t0 + timedelta(seconds=2),
                ),
                routing,
                tid,
            )
            await send(marker)
            doc = await wait_until("the marker", lambda: last_is("assignment.sla-warning"))
            assert (doc["status"], doc["technician_id"]) == ("assigned", "tech-6")
            assert [e["type"] for e in doc["timeline"]] == [
                "ticket.created",
                "assignment.assigned",
                "assignment.queued",
                "assignment.assigned",
                "assignment.sla-warning",
            ]
    finally:
        await producer.stop()

    # The ticket's document carries no timeline and no applied-event window: they are documents of
    # their own, read and written by `_id`.
    client = mongo(platform.infra)
    try:
        stored = await client[platform.database("intake")]["tickets"].find_one({"_id": tid})
    finally:
        await client.close()
    assert stored is not None and "timeline" not in stored and "applied_events" not in stored
