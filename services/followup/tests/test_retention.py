"""Retention (PIPL) in follow-up, in-process: the agents' notes on a visit are removed once the visit has
not changed for the period (its retention timer fires), a visit changed since is kept and armed again,
and the visit itself (ids, kind, outcome) stays. Time is driven by firing the timers at a chosen `now`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from aftersales.followup.app import Settings, build
from aftersales.followup.retention import VISIT_NOTES
from aftersales.shared.contracts.common import Priority
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SCHEDULED = "aftersales.followup.scheduled.v1"
DESK = "dev-supervisor-token"
NOTE = "spoke to her husband Wang at Lane 5"
DAYS = 30


@pytest.fixture
async def followup() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(
        build, Settings(**FAST, callback_delay_s=0, retention_visit_notes_days=DAYS)
    ) as svc:
        yield svc


async def noted_visit(svc: ServiceUnderTest, ticket_id: str) -> str:
    """Resolve a ticket and write an agent's note on its callback; return the visit id."""
    await svc.deliver(ticket_created(ticket_id, customer_id=f"C-{ticket_id}", priority=Priority.P2))
    await svc.deliver(work_order_resolved(ticket_id))
    await svc.published.wait_for(SCHEDULED, lambda e: e.subject == ticket_id)
    await svc.fire_timers(now=datetime.now(UTC) + timedelta(minutes=1))  # the callback falls due
    r = await svc.http.get("/v1/visits", params={"ticket_id": ticket_id}, headers=svc.auth(DESK))
    [visit] = [v for v in r.json()["items"] if v["kind"] == "callback"]
    body = {"outcome": "confirmed_resolved", "note": NOTE}
    r = await svc.http.post(f"/v1/visits/{visit['id']}/outcome", json=body, headers=svc.auth(DESK))
    assert r.status_code == 200, r.text
    return str(visit["id"])


async def detail(svc: ServiceUnderTest, visit_id: str) -> str:
    r = await svc.http.get(f"/v1/visits/{visit_id}", headers=svc.auth(DESK))
    assert r.status_code == 200, r.text
    return r.text


def pseudonymised() -> float:
    labels = {"service": "followup", "kind": VISIT_NOTES}
    return REGISTRY.get_sample_value("aftersales_retention_pseudonymised_total", labels) or 0.0


async def test_notes_older_than_the_period_are_removed_and_the_visit_stays(
    followup: ServiceUnderTest,
) -> None:
    visit_id = await noted_visit(followup, "T-r1")
    before = pseudonymised()
    now = datetime.now(UTC)
    await followup.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert "Wang" in await detail(followup, visit_id)
    await followup.fire_timers(now=now + timedelta(days=DAYS + 2))
    visit = await detail(followup, visit_id)
    assert "Wang" not in visit and '"outcome:confirmed_resolved"' in visit and visit_id in visit
    assert pseudonymised() == before + 1


async def test_a_visit_changed_since_is_kept_and_armed_again(followup: ServiceUnderTest) -> None:
    visit_id = await noted_visit(followup, "T-r2")
    now = datetime.now(UTC)
    touched = now + timedelta(days=10)  # a change that did not arm it again
    await followup.runtime.db["visits"].update_one({"_id": visit_id}, {"$set": {"updated_at": touched}})
    await followup.fire_timers(now=now + timedelta(days=DAYS + 2))
    assert "Wang" in await detail(followup, visit_id)
    await followup.fire_timers(now=touched + timedelta(days=DAYS + 2))
    assert "Wang" not in await detail(followup, visit_id)


async def test_a_zero_period_keeps_notes() -> None:
    settings = Settings(**FAST, callback_delay_s=0, retention_visit_notes_days=0)
    async with in_process(build, settings) as svc:
        visit_id = await noted_visit(svc, "T-r3")
        await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=20 * 365))
        assert "Wang" in await detail(svc, visit_id)
        assert await svc.runtime.db["retention"].count_documents({}) == 0
