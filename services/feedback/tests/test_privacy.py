"""Feedback and personal-data rights, in-process: an erasure removes the customer's words (a survey
comment, a complaint's summary and notes) from the documents of its tickets, found by `_id`, keeps the
scores, and is confirmed once however often it is delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.feedback.app import Settings, build
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SENT = "aftersales.feedback.survey-sent.v1"
OPENED = "aftersales.feedback.complaint-opened.v1"
CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
SUPERVISOR = "dev-supervisor-token"
SAID = "Mrs Zhou of Garden Road 12 is unhappy"


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def test_erasure_removes_comments_and_complaint_texts(feedback: ServiceUnderTest) -> None:
    await feedback.deliver(ticket_created("T1", customer_id="C-1"))
    await feedback.deliver(work_order_resolved("T1"))
    await feedback.published.wait_for(SENT)
    r = await feedback.http.get("/v1/surveys", params={"ticket_id": "T1"}, headers=feedback.auth(SUPERVISOR))
    [survey] = r.json()["items"]
    r = await feedback.http.post(f"/v1/surveys/{survey['token']}", json={"csat": 2, "comment": SAID})
    assert r.status_code == 200, r.text
    body = {"ticket_id": "T1", "summary": SAID}
    r = await feedback.http.post("/v1/complaints", json=body, headers=feedback.auth(SUPERVISOR))
    assert r.status_code == 201, r.text
    complaint_id = r.json()["id"]
    await feedback.published.wait_for(OPENED, count=2)  # the API's and the low score's

    request = ErasureRequested(
        erasure_id="ER-1", customer_id="C-1", ticket_ids=["T1"], requested_at=datetime.now(UTC)
    )
    event = new_event(request, source="/aftersales/intake", subject="C-1")
    await feedback.deliver(event, copies=2)
    [confirmed] = await feedback.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"survey_comments": 1, "complaint_texts": 1}
    r = await feedback.http.get("/v1/surveys", params={"ticket_id": "T1"}, headers=feedback.auth(SUPERVISOR))
    [after] = r.json()["items"]
    assert after["csat"] == 2 and SAID not in r.text
    r = await feedback.http.get(f"/v1/complaints/{complaint_id}", headers=feedback.auth(SUPERVISOR))
    assert r.status_code == 200 and SAID not in r.text
