"""Retention (PIPL) in feedback, in-process: a survey comment and a complaint's summary and notes are
removed once their period has passed since the last activity (armed from feedback's own event stream;
the retention timer of their bucket fires), a complaint changed since is kept and armed again, and the
scores, states and ids stay so KPIs keep counting. Time is driven by firing the timers at a chosen
`now`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from aftersales.feedback.app import Settings, build
from aftersales.feedback.retention import COMPLAINT_TEXTS, SURVEY_COMMENTS
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process, ticket_created, work_order_resolved

SENT = "aftersales.feedback.survey-sent.v1"
OPENED = "aftersales.feedback.complaint-opened.v1"
SUPERVISOR = "dev-supervisor-token"
SAID = "Mrs Zhou of Garden Road 12 is unhappy"
DAYS = 30


def settings(days: float = DAYS) -> Settings:
    return Settings(**FAST, retention_survey_comments_days=days, retention_complaint_texts_days=days)


@pytest.fixture
async def feedback() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, settings()) as svc:
        yield svc


async def commented(svc: ServiceUnderTest, ticket_id: str) -> str:
    """A survey answered with a comment and a complaint with a summary; return the complaint id."""
    await svc.deliver(ticket_created(ticket_id, customer_id=f"C-{ticket_id}"))
    await svc.deliver(work_order_resolved(ticket_id))
    await svc.published.wait_for(SENT, lambda e: e.subject == ticket_id)
    auth = svc.auth(SUPERVISOR)
    r = await svc.http.get("/v1/surveys", params={"ticket_id": ticket_id}, headers=auth)
    [survey] = r.json()["items"]
    r = await svc.http.post(f"/v1/surveys/{survey['token']}", json={"csat": 4, "nps": 9, "comment": SAID})
    assert r.status_code == 200, r.text
    r = await svc.http.post("/v1/complaints", json={"ticket_id": ticket_id, "summary": SAID}, headers=auth)
    assert r.status_code == 201, r.text
    await svc.published.wait_for(OPENED, lambda e: e.subject == ticket_id)
    await svc.drain_outbox()  # the stream arms the answer and the complaint
    return str(r.json()["id"])


async def texts(svc: ServiceUnderTest, ticket_id: str, complaint_id: str) -> tuple[str, str]:
    auth = svc.auth(SUPERVISOR)
    surveys = await svc.http.get("/v1/surveys", params={"ticket_id": ticket_id}, headers=auth)
    complaint = await svc.http.get(f"/v1/complaints/{complaint_id}", headers=auth)
    assert surveys.status_code == 200 and complaint.status_code == 200, complaint.text
    return surveys.text, complaint.text


def pseudonymised(kind: str) -> float:
    labels = {"service": "feedback", "kind": kind}
    return REGISTRY.get_sample_value("aftersales_retention_pseudonymised_total", labels) or 0.0


async def test_texts_older_than_the_period_are_removed_and_scores_stay(feedback: ServiceUnderTest) -> None:
    complaint_id = await commented(feedback, "T-r1")
    before = pseudonymised(SURVEY_COMMENTS), pseudonymised(COMPLAINT_TEXTS)
    now = datetime.now(UTC)
    await feedback.fire_timers(now=now + timedelta(days=DAYS - 1))
    assert all(SAID in text for text in await texts(feedback, "T-r1", complaint_id))

    await feedback.fire_timers(now=now + timedelta(days=DAYS + 2))
    surveys, complaint = await texts(feedback, "T-r1", complaint_id)
    assert SAID not in surveys and SAID not in complaint
    assert '"csat":4' in surveys and '"nps":9' in surveys and complaint_id in complaint
    assert (pseudonymised(SURVEY_COMMENTS), pseudonymised(COMPLAINT_TEXTS)) == (before[0] + 1, before[1] + 1)


async def test_a_complaint_changed_since_is_kept_and_armed_again(feedback: ServiceUnderTest) -> None:
    complaint_id = await commented(feedback, "T-r2")
    now = datetime.now(UTC)
    await feedback.fire_timers(now=now + timedelta(days=8))  # its deadlines pass: escalated (a change)
    await feedback.drain_outbox()
    touched = now + timedelta(days=10)  # a change that did not arm it again
    await feedback.runtime.db["complaints"].update_one(
        {"_id": complaint_id}, {"$set": {"updated_at": touched}}
    )
    await feedback.fire_timers(now=now + timedelta(days=DAYS + 2))
    surveys, complaint = await texts(feedback, "T-r2", complaint_id)
    assert SAID not in surveys and SAID in complaint
    await feedback.fire_timers(now=touched + timedelta(days=DAYS + 2))
    assert SAID not in (await texts(feedback, "T-r2", complaint_id))[1]


async def test_a_zero_period_keeps_the_texts_and_periods_cannot_be_negative() -> None:
    async with in_process(build, settings(days=0)) as svc:
        complaint_id = await commented(svc, "T-r3")
        await svc.fire_timers(now=datetime.now(UTC) + timedelta(days=20 * 365))
        assert all(SAID in text for text in await texts(svc, "T-r3", complaint_id))
        assert await svc.runtime.db["retention_buckets"].count_documents({}) == 0
    with pytest.raises(ValueError, match="retention_complaint_texts_days"):
        Settings(**FAST, retention_complaint_texts_days=-1)
