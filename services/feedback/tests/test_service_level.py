"""Feedback in-process (FastStream's TestKafkaBroker, in-memory MongoDB): a resolution sends one survey,
its answer is counted and a low score opens a complaint; a link answered twice at once counts once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aftersales.feedback.app import Settings, build
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    in_process,
    ticket_created,
    work_order_resolved,
)

SENT = "aftersales.feedback.survey-sent.v1"
SUBMITTED = "aftersales.feedback.survey-submitted.v1"
COMPLAINT_OPENED = "aftersales.feedback.complaint-opened.v1"
SUPERVISOR = "dev-supervisor-token"


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def survey_token(svc: ServiceUnderTest, ticket_id: str) -> str:
    r = await svc.http.get("/v1/surveys", params={"ticket_id": ticket_id}, headers=svc.auth(SUPERVISOR))
    assert r.status_code == 200, r.text
    [survey] = r.json()["items"]
    token: str = survey["token"]
    return token


async def results(svc: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await svc.http.get(
        "/v1/surveys/results", params={"ticket_id": ticket_id}, headers=svc.auth(SUPERVISOR)
    )
    assert r.status_code == 200, r.text
    summary: dict[str, Any] = r.json()["summary"]
    return summary


async def test_a_low_survey_answer_is_counted_and_opens_a_complaint(feedback: ServiceUnderTest) -> None:
    await feedback.deliver(ticket_created("T1"))
    await feedback.deliver(work_order_resolved("T1"))
    [sent] = await feedback.published.wait_for(SENT)
    assert sent.data["ticket_id"] == "T1" and sent.data["technician_id"] == "tech-42"

    token = await survey_token(feedback, "T1")
    r = await feedback.http.post(f"/v1/surveys/{token}", json={"csat": 2, "nps": 3, "comment": "slow"})
    assert r.status_code == 200 and r.json()["status"] == "submitted", r.text

    [submitted] = await feedback.published.wait_for(SUBMITTED)
    assert submitted.data["csat"] == 2
    [opened] = await feedback.published.wait_for(COMPLAINT_OPENED)  # our own event, consumed back
    assert opened.data["ticket_id"] == "T1"
    summary = await results(feedback, "T1")
    assert (summary["sent"], summary["submitted"], summary["csat_average"]) == (1, 1, 2.0)
    assert feedback.dead_letters == []


async def test_one_survey_per_resolution_and_one_answer_per_link_under_races(
    feedback: ServiceUnderTest,
) -> None:
    await feedback.deliver(ticket_created("T1"))
    event = work_order_resolved("T1")
    await feedback.deliver(event, replicas=2)
    await feedback.published_exactly(SENT)

    token = await survey_token(feedback, "T1")  # exactly one survey
    first, second = await asyncio.gather(
        *(feedback.http.post(f"/v1/surveys/{token}", json={"csat": 5}) for _ in range(2))
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
    await feedback.published_exactly(SUBMITTED)
    assert feedback.published.of_type(COMPLAINT_OPENED) == []
    assert (await results(feedback, "T1"))["submitted"] == 1
