"""A visit's history is bounded (issue 10, S6): outcomes by `VISIT_MAX_ATTEMPTS`, moves by
`VISIT_MAX_RESCHEDULES`; a move past the cap is a 409 naming `history` and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from aftersales.followup.app import Settings, build
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

DESK = "dev-supervisor-token"
MOVES = 3


@pytest.fixture
async def followup() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, visit_max_reschedules=MOVES)) as svc:
        yield svc


async def test_a_visit_moved_past_its_cap_is_refused_and_its_history_stops_growing(
    followup: ServiceUnderTest,
) -> None:
    await followup.deliver(ticket_created("T1"))
    await followup.deliver(work_order_resolved("T1"))
    await followup.published.wait_for("aftersales.followup.scheduled.v1")
    visit = "V-T1-r1-callback"
    url, desk = f"/v1/visits/{visit}/reschedule", followup.auth(DESK)

    for n in range(1, MOVES + 1):
        due = (datetime.now(UTC) + timedelta(days=n)).isoformat()
        moved = await followup.http.post(url, json={"due_at": due, "note": f"move {n}"}, headers=desk)
        assert moved.status_code == 200, moved.text
    before = (await followup.http.get(f"/v1/visits/{visit}", headers=desk)).json()
    assert [h["action"] for h in before["history"]] == ["scheduled"] + ["rescheduled"] * MOVES

    refused = await followup.http.post(url, json={"due_at": before["due_at"]}, headers=desk)
    assert refused.status_code == 409 and refused.json()["field"] == "history", refused.text
    after = (await followup.http.get(f"/v1/visits/{visit}", headers=desk)).json()
    assert after == before
