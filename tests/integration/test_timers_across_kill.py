"""Durable timers survive a crash: follow-up's visit timers and feedback's complaint deadlines, set by a
process that is then SIGKILLed (no shutdown at all), fire once after a restart, from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from followup_events import AROUND_THE_CLOCK, resolve_a_standard_ticket
from harness import Platform, auth, data_of, headers_of, read_to_end, unique, wait_until

from aftersales.shared.contracts import Topic

pytestmark = pytest.mark.long_running(minutes=1.7)

DESK = auth("dev-supervisor-token")
# How far ahead the timers are set: time enough to see them stored and kill the process first.
LEAD_S = 20


async def get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    response = await client.get(url, headers=DESK)
    return response.json() if response.status_code == 200 else None


async def past(instant: datetime) -> bool:
    return datetime.now(UTC) > instant


async def test_a_visit_timer_set_before_a_sigkill_fires_once_after_the_restart(platform: Platform) -> None:
    settings = {"CALLBACK_DELAY_S": str(LEAD_S), **AROUND_THE_CLOCK}
    first = (await platform.start_ready("followup", **settings))["followup"]
    ticket = await resolve_a_standard_ticket(platform)
    visit_url = f"{first.url}/v1/visits/V-{ticket}-r1-callback"
    async with httpx.AsyncClient(timeout=10) as client:
        scheduled = await wait_until("the callback scheduled", lambda: get_json(client, visit_url))
    first.kill()  # the visit and its timer are stored; nothing else of the process survives
    killed_at = datetime.now(UTC)
    due_at = datetime.fromisoformat(scheduled["due_at"])
    assert scheduled["status"] == "scheduled"
    assert killed_at < due_at, "killed after the timer was due: LEAD_S is too short for this machine"
    await wait_until("the callback due while followup is dead", lambda: past(due_at), timeout_s=LEAD_S + 10)

    restarted = platform.start("followup", replica=1, **settings)
    await restarted.wait_ready()
    visit_url = visit_url.replace(first.url, restarted.url)
    async with httpx.AsyncClient(timeout=10) as client:
        due = await wait_until(
            "the callback due after the restart",
            lambda: _when(get_json(client, visit_url), lambda v: v["status"] == "due"),
        )
    assert [h["action"] for h in due["history"]] == ["scheduled", "due"]
    assert restarted.stop() == 0  # the topic is then final
    events = await read_to_end(platform.infra, platform.topic(Topic.FOLLOWUPS))
    fired = [data_of(r) for r in events if headers_of(r)["ce_type"] == "aftersales.followup.due.v1"]
    assert [d["visit_id"] for d in fired] == [f"V-{ticket}-r1-callback"]
    assert datetime.fromisoformat(fired[0]["occurred_at"]) > killed_at


async def test_a_complaint_deadline_set_before_a_sigkill_escalates_once_after_the_restart(
    platform: Platform,
) -> None:
    settings = {"COMPLAINT_ACK_H": str(LEAD_S / 3600)}  # acknowledge within LEAD_S seconds
    first = (await platform.start_ready("feedback", **settings))["feedback"]
    body = {"product_model": unique("FR-"), "summary": "noisy compressor", "category": "hardware_fault"}
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(f"{first.url}/v1/complaints", json=body, headers=DESK)
    assert opened.status_code == 201, opened.text
    complaint = opened.json()
    first.kill()
    killed_at = datetime.now(UTC)
    deadline = datetime.fromisoformat(complaint["step_deadline_at"])
    assert not complaint["escalated"]
    assert killed_at < deadline, "killed after the deadline passed: LEAD_S is too short for this machine"
    await wait_until(
        "the deadline passed while feedback is dead", lambda: past(deadline), timeout_s=LEAD_S + 10
    )

    restarted = platform.start("feedback", replica=1, **settings)
    await restarted.wait_ready()
    url = f"{restarted.url}/v1/complaints/{complaint['id']}"
    async with httpx.AsyncClient(timeout=10) as client:
        escalated = await wait_until(
            "the complaint escalated after the restart",
            lambda: _when(get_json(client, url), lambda c: c["escalated"]),
        )
    assert escalated["state"] == "received"
    assert restarted.stop() == 0
    events = await read_to_end(platform.infra, platform.topic(Topic.FEEDBACK))
    overdue = [
        data_of(r)
        for r in events
        if headers_of(r)["ce_type"] == "aftersales.feedback.complaint-updated.v1"
        and data_of(r)["change"] == "overdue"
    ]
    assert [d["complaint_id"] for d in overdue] == [complaint["id"]]
    assert datetime.fromisoformat(overdue[0]["occurred_at"]) > killed_at


async def _when(value: Any, ok: Any) -> Any:
    result = await value
    return result if result is not None and ok(result) else None
