"""Feedback and PIPL data exports, in-process: the surveys and complaints of the customer's tickets (the
customer's words with them) are answered sealed to the export's key, once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.feedback.app import Settings, build
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.export import ExportKeys, unseal
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SENT = "aftersales.feedback.survey-sent.v1"
OPENED = "aftersales.feedback.complaint-opened.v1"
ANSWERED = "aftersales.privacy.export-answered.v1"
SUPERVISOR = "dev-supervisor-token"
SAID = "Mrs Zhou of Garden Road 12 is unhappy"


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def test_export_answers_surveys_and_complaints_sealed_and_once(feedback: ServiceUnderTest) -> None:
    await feedback.deliver(ticket_created("T1", customer_id="C-1"))
    await feedback.deliver(work_order_resolved("T1"))
    await feedback.published.wait_for(SENT)
    r = await feedback.http.get("/v1/surveys", params={"ticket_id": "T1"}, headers=feedback.auth(SUPERVISOR))
    [survey] = r.json()["items"]
    r = await feedback.http.post(f"/v1/surveys/{survey['token']}", json={"csat": 2, "comment": SAID})
    assert r.status_code == 200, r.text
    await feedback.published.wait_for(OPENED)  # the low score's complaint

    keys = ExportKeys.generate()
    request = ExportRequested(
        export_id="EX-1",
        customer_id="C-1",
        ticket_ids=["T1"],
        public_key=keys.public_key,
        requested_at=datetime.now(UTC),
    )
    await feedback.deliver(new_event(request, source="/aftersales/intake", subject="C-1"), copies=2)
    [answered] = await feedback.published_exactly(ANSWERED)
    assert answered.data["counts"] == {"surveys": 1, "complaints": 1}
    assert SAID not in answered.value().decode()
    records = json.loads(unseal(keys.private_key, answered.data["sealed"]))["records"]
    assert records["surveys"][0]["comment"] == SAID and records["surveys"][0]["csat"] == 2
    assert records["complaints"][0]["ticket_id"] == "T1"
