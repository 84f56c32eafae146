"""A complaint's history is bounded (issue 10, S6): at most `COMPLAINT_MAX_STEPS` workflow steps (each
escalation is tied to a step or a cycle); a step past the cap is a 409 naming `history` and changes
nothing."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from aftersales.feedback.app import Settings, build
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

SUPERVISOR = "dev-supervisor-token"
STEPS = 6


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, complaint_max_steps=STEPS)) as svc:
        yield svc


async def test_a_complaint_walked_past_its_cap_is_refused_and_its_history_stops_growing(
    feedback: ServiceUnderTest,
) -> None:
    auth = feedback.auth(SUPERVISOR)
    opened = await feedback.http.post(
        "/v1/complaints", json={"summary": "noisy compressor", "owner_id": "sup-1"}, headers=auth
    )
    assert opened.status_code == 201, opened.text
    url = f"/v1/complaints/{opened.json()['id']}"

    # Round and round: every cycle through the workflow (and every reopen) is a step with a note.
    walk = itertools.cycle(["investigating", "resolution_proposed", "replied", "closed"])
    for n in range(STEPS):
        moved = await feedback.http.post(
            f"{url}/transition", json={"to": next(walk), "note": f"step {n}"}, headers=auth
        )
        assert moved.status_code == 200, moved.text
    before = (await feedback.http.get(url, headers=auth)).json()
    assert len(before["history"]) == 1 + STEPS

    refused = await feedback.http.post(f"{url}/transition", json={"to": next(walk)}, headers=auth)
    assert refused.status_code == 409 and refused.json()["field"] == "history", refused.text
    assert (await feedback.http.get(url, headers=auth)).json() == before
