"""Follow-up and PIPL data exports, in-process: the customer's visits with the agents' notes are answered
sealed to the export's key (no note in plaintext on the topic), once however often the request comes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from aftersales.followup.app import Settings, build
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.export import ExportKeys, unseal
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SCHEDULED = "aftersales.followup.scheduled.v1"
ANSWERED = "aftersales.privacy.export-answered.v1"
DESK = "dev-supervisor-token"
NOTE = "spoke to her husband Wang at Lane 5"
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


async def test_export_answers_the_customers_visits_sealed_and_once(followup: ServiceUnderTest) -> None:
    ticket = ticket_created(
        "T-x", customer_id="C-x", priority=Priority.P2, customer_tier=CustomerTier.KEY_ACCOUNT
    )
    await followup.deliver(ticket)
    await followup.deliver(work_order_resolved("T-x"))
    await followup.published.wait_for(SCHEDULED, count=3)
    await followup.fire_timers(now=datetime.now(UTC) + timedelta(minutes=1))
    r = await followup.http.get("/v1/visits", params={"ticket_id": "T-x"}, headers=followup.auth(DESK))
    visit_id = r.json()["items"][0]["id"]
    body = {"outcome": "unreachable", "note": NOTE}
    r = await followup.http.post(f"/v1/visits/{visit_id}/outcome", json=body, headers=followup.auth(DESK))
    assert r.status_code == 200, r.text

    keys = ExportKeys.generate()
    request = ExportRequested(
        export_id="EX-1",
        customer_id="C-x",
        ticket_ids=["T-x", "T-unknown"],
        public_key=keys.public_key,
        requested_at=datetime.now(UTC),
    )
    await followup.deliver(new_event(request, source="/aftersales/intake", subject="C-x"), copies=2)
    [answered] = await followup.published_exactly(ANSWERED)
    assert answered.data["service"] == "followup" and answered.data["counts"] == {"visits": 3}
    assert NOTE not in answered.value().decode()
    visits = json.loads(unseal(keys.private_key, answered.data["sealed"]))["records"]["visits"]
    assert {v["ticket_id"] for v in visits} == {"T-x"}
    assert NOTE in [entry.get("note") for v in visits for entry in v["history"]]
