"""Follow-up in-process (FastStream's TestKafkaBroker, in-memory MongoDB): a resolution schedules its
visits, timers make them due, the desk records outcomes over HTTP; a duplicate resolution schedules once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aftersales.followup.app import Settings, build
from aftersales.shared.contracts.common import Channel, CustomerTier, Priority
from aftersales.shared.contracts.events import TicketClosed
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    contract_event,
    in_process,
    ticket_created,
    work_order_resolved,
)

SCHEDULED = "aftersales.followup.scheduled.v1"
COMPLETED = "aftersales.followup.completed.v1"
DESK = "dev-supervisor-token"
# The desk works around the clock, so whether a visit falls due does not depend on when the suite runs.
AROUND_THE_CLOCK: dict[str, Any] = {
    "do_not_disturb_start": time(0, 0),
    "do_not_disturb_end": time(0, 0),
    "business_hours_open": time(0, 0),
    "business_hours_close": time(23, 59, 59, 999999),
    "business_days": frozenset(range(7)),
}


@pytest.fixture
async def followup() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, **AROUND_THE_CLOCK, callback_delay_s=0)) as svc:
        yield svc


def created(ticket_id: str) -> CloudEvent:
    """A key account's hardware fault: a callback, an on-site check and a care visit follow it."""
    return ticket_created(
        ticket_id,
        channel=Channel.PHONE,
        priority=Priority.P2,
        customer_tier=CustomerTier.KEY_ACCOUNT,
        customer_timezone="Asia/Shanghai",
    )


async def visits(svc: ServiceUnderTest, **params: str) -> list[dict[str, Any]]:
    r = await svc.http.get("/v1/visits", params=params, headers=svc.auth(DESK))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_a_resolution_schedules_visits_that_fall_due_and_take_an_outcome(
    followup: ServiceUnderTest,
) -> None:
    await followup.deliver(created("T1"))
    await followup.deliver(work_order_resolved("T1"))

    # A key account's hardware fault: a callback, an on-site check by the technician, a care visit.
    await followup.published.wait_for(SCHEDULED, count=3)
    kinds = {v["kind"]: v for v in await visits(followup, ticket_id="T1")}
    assert set(kinds) == {"callback", "on_site", "care"}
    assert kinds["on_site"]["agent_id"] == "tech-42"
    callback = kinds["callback"]["id"]

    await followup.fire_timers(now=datetime.now(UTC) + timedelta(minutes=1))
    assert any(v["id"] == callback for v in await visits(followup, status="due", grid="grid-7"))
    r = await followup.http.post(
        f"/v1/visits/{callback}/outcome", json={"outcome": "confirmed_resolved"}, headers=followup.auth(DESK)
    )
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    [completed] = await followup.published.wait_for(COMPLETED)
    assert completed.data["visit_id"] == callback
    assert followup.dead_letters == []


async def test_a_resolution_read_before_its_ticket_waits_for_the_customers_facts(
    followup: ServiceUnderTest,
) -> None:
    """The resolution (routing's topic) and the ticket's facts (intake's) are consumed side by side, so
    the resolution can come first. It used to plan at once without them: UTC hours for a customer in
    Shanghai, the standard tier's callback target and no care visit, never corrected afterwards. Now it
    is retried until the facts are there."""
    resolving = asyncio.create_task(followup.deliver(work_order_resolved("T1")))
    await asyncio.sleep(0.3)  # the resolution is being retried: nothing planned yet
    assert await visits(followup, ticket_id="T1") == []
    await followup.deliver(created("T1"))
    await resolving

    await followup.published.wait_for(SCHEDULED, count=3)
    planned = await visits(followup, ticket_id="T1")
    assert {v["kind"] for v in planned} == {"callback", "on_site", "care"}
    assert {v["timezone"] for v in planned} == {"Asia/Shanghai"}
    assert followup.dead_letters == []


async def test_a_resolution_whose_facts_never_came_is_planned_without_them_after_the_wait(
    followup: ServiceUnderTest,
) -> None:
    """A resolution older than the wait (a replay; facts lost upstream) is not retried for ever."""
    before = REGISTRY.get_sample_value("aftersales_visits_planned_without_facts_total") or 0.0
    await followup.deliver(work_order_resolved("T1", occurred_at=datetime.now(UTC) - timedelta(minutes=3)))

    planned = await visits(followup, ticket_id="T1")
    assert {v["kind"] for v in planned} == {"callback", "on_site"}  # no customer: no care plan
    assert {v["timezone"] for v in planned} == {"UTC"}
    assert REGISTRY.get_sample_value("aftersales_visits_planned_without_facts_total") == before + 1


async def test_a_resolution_delivered_twice_at_once_schedules_each_visit_once(
    followup: ServiceUnderTest,
) -> None:
    await followup.deliver(created("T1"))
    event = work_order_resolved("T1")
    await followup.deliver(event, replicas=2)
    await followup.deliver(event)

    await followup.published_exactly(SCHEDULED, 3)
    assert len(await visits(followup, ticket_id="T1")) == 3


async def test_a_care_number_recorded_before_its_visit_is_planned_again_not_skipped(
    followup: ServiceUnderTest,
) -> None:
    """A concurrent handler records the customer's care number before it inserts that care visit (or
    crashes in between): a resolution reading that moment plans the same number, never the next, so the
    two handlers end with one care visit (4 scheduled events were seen once under load before)."""
    await followup.deliver(created("T1"))
    customer = (await followup.runtime.db["tickets"].find_one({"_id": "T1"}))["customer_id"]
    await followup.runtime.db["customers"].update_one({"_id": customer}, {"$max": {"care_n": 1}}, upsert=True)
    await followup.deliver(work_order_resolved("T1"))
    await followup.published_exactly(SCHEDULED, 3)
    care = [v for v in await visits(followup, ticket_id="T1") if v["kind"] == "care"]
    assert [v["id"] for v in care] == [f"V-care-{customer}-1"]


async def test_a_ticket_closed_after_its_callback_keeps_its_on_site_check(followup: ServiceUnderTest) -> None:
    """Issue 16: the on-site quality check (上门检查) is independent of the phone callback."""
    await followup.deliver(created("T1"))
    await followup.deliver(work_order_resolved("T1"))
    await followup.published.wait_for(SCHEDULED, count=3)
    closed = TicketClosed(ticket_id="T1", reason="confirmed_resolved", closed_at=datetime.now(UTC))
    await followup.deliver(contract_event(closed, source="/aftersales/intake"))

    status = {v["kind"]: v["status"] for v in await visits(followup, ticket_id="T1")}
    assert status["callback"] == "cancelled"
    assert status["on_site"] != "cancelled" and status["care"] != "cancelled", status
