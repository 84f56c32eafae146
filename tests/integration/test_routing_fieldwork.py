"""On-site work on the real stack (routing as a process, real Kafka + the MongoDB-wire server): fieldwork's
events, published as fieldwork publishes them, pause a work order's resolution clock while it waits for
parts (the policy pausing on parts) and count a later window the customer chose as customer time; the
due time moves by the pause, read over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import Platform, auth, wait_until
from test_routing_support import assignment_events, grid_body, produce_events, put_all, tech_body, ticket

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.fieldwork import AppointmentBooked, VisitCheckedIn, WorkOrderWaitingForParts
from aftersales.shared.envelope import new_event

H = timedelta(hours=1)


def now_ms() -> datetime:
    """Return now to the millisecond, as the database keeps times."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def fieldwork_event(data: Any) -> Any:
    return new_event(data, source="/aftersales/fieldwork", subject=data.ticket_id)


def due_of(wo: dict[str, Any]) -> datetime | None:
    due = wo["resolution"]["due_at"]
    return None if due is None else datetime.fromisoformat(due)


async def test_parts_and_a_customer_window_pause_the_resolution_clock(platform: Platform) -> None:
    routing = platform.start("routing")
    await routing.wait_ready(90)
    base, field_topic = routing.url, platform.topic(Topic.FIELDWORK)
    async with httpx.AsyncClient(timeout=20) as client:
        await put_all(client, base, [grid_body("xuhui", "310104")], [tech_body("t1", "xuhui", capacity=5)])
        r = await client.get(f"{base}/v1/sla-policies", headers=auth())
        policy = {"targets": r.json()["targets"], "pause_on": ["customer", "parts"]}
        r = await client.put(f"{base}/v1/sla-policies", json=policy, headers=auth())
        assert r.status_code == 200 and r.json()["pause_on"] == ["customer", "parts"], r.text

        await produce_events(
            platform.infra, platform.topic(Topic.TICKETS), [ticket(t, "310104") for t in "PW"]
        )
        await assignment_events(
            platform.infra, platform.topic(Topic.ASSIGNMENTS), expect=2, types=("assigned",)
        )
        due: dict[str, datetime] = {}
        for tid in "PW":
            r = await client.post(f"{base}/v1/work-orders/{tid}/accept", headers=auth())
            assert r.status_code == 200, r.text
            due[tid] = datetime.fromisoformat(r.json()["resolution"]["due_at"])

        async def work_order(tid: str) -> dict[str, Any]:
            r = await client.get(f"{base}/v1/work-orders/{tid}", headers=auth())
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        # P waits for a part (delivered twice), then the technician checks in two hours later.
        at = now_ms()
        wait = fieldwork_event(
            WorkOrderWaitingForParts(
                ticket_id="P", technician_id="t1", part_id="fan", quantity=1, occurred_at=at
            )
        )
        await produce_events(platform.infra, field_topic, [wait, wait])

        async def paused() -> dict[str, Any] | None:
            wo = await work_order("P")
            return wo if wo["pending_reason"] == "waiting_for_parts" else None

        wo = await wait_until("P paused for parts", paused)
        assert due_of(wo) is None and wo["resolution"]["paused_at"] is not None
        assert wo["resolution"]["remaining_s"] > 0

        # W: the customer's channel books a window a day after the due time.
        start = due["W"] + 24 * H
        booked = AppointmentBooked(
            appointment_id="A-W",
            ticket_id="W",
            technician_id="t1",
            occurred_at=at,
            window_start=start,
            window_end=start + 2 * H,
            booked_by="channel",
            chosen_by="customer",
        )
        checked_in = VisitCheckedIn(
            appointment_id="A-P", ticket_id="P", technician_id="t1", occurred_at=at + 2 * H
        )
        await produce_events(
            platform.infra, field_topic, [fieldwork_event(booked), fieldwork_event(checked_in)]
        )

        async def resumed() -> dict[str, Any] | None:
            wo = await work_order("P")
            return wo if due_of(wo) is not None else None

        wo = await wait_until("P resumed on check-in", resumed)
        assert wo["pending_reason"] is None and due_of(wo) == due["P"] + 2 * H

        async def customer_time() -> dict[str, Any] | None:
            wo = await work_order("W")
            return wo if wo["pending_reason"] == "customer_window" else None

        wo = await wait_until("W in customer time", customer_time)
        assert due_of(wo) == due["W"] + (start - at)
        assert datetime.fromisoformat(wo["pending_until"]) == start
