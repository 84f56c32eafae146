"""The events an outcome publishes, in order, and the settings that shape the policy."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from pydantic import ValidationError

from aftersales.followup import messages
from aftersales.followup.app import Settings
from aftersales.followup.domain import FollowUpPolicy, Visit, VisitStatus, record_outcome
from aftersales.shared.contracts.common import Priority
from aftersales.shared.contracts.events import (
    ReopenRequested,
    VisitCompleted,
    VisitKind,
    VisitMissed,
    VisitOutcome,
    VisitScheduled,
)

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # 14:00 in Shanghai
POLICY = FollowUpPolicy(max_attempts=2)
NOTE = "call back on +86 138 0013 8000"


def visit(attempt: int = 1) -> Visit:
    return Visit(
        id="V-T-1-r2-callback",
        ticket_id="T-1",
        kind=VisitKind.CALLBACK,
        status=VisitStatus.DUE,
        round=2,
        due_at=NOW,
        deadline_at=NOW + timedelta(hours=4),
        timezone="Asia/Shanghai",
        attempt=attempt,
        technician_id="tech-1",
        grid_id="grid-1",
    )


def events_for(outcome: VisitOutcome, attempt: int = 1) -> list[object]:
    before = visit(attempt)
    return list(messages.for_decision(before, record_outcome(POLICY, before, outcome, NOW), NOW, NOTE))


def test_not_resolved_publishes_completed_then_reopen_request_without_the_note() -> None:
    completed, reopen = events_for(VisitOutcome.NOT_RESOLVED)
    assert isinstance(completed, VisitCompleted) and completed.outcome == VisitOutcome.NOT_RESOLVED
    assert isinstance(reopen, ReopenRequested)
    assert (reopen.round, reopen.technician_id, reopen.ticket_id) == (2, "tech-1", "T-1")
    assert "138" not in reopen.reason and reopen.reason.endswith("(agent note on file)")


def test_confirmed_resolved_publishes_one_completion() -> None:
    [completed] = events_for(VisitOutcome.CONFIRMED_RESOLVED)
    assert isinstance(completed, VisitCompleted) and (completed.round, completed.attempt) == (2, 1)


def test_unreachable_publishes_a_reschedule_then_a_miss() -> None:
    [again] = events_for(VisitOutcome.UNREACHABLE, attempt=1)
    assert isinstance(again, VisitScheduled) and again.rescheduled and again.attempt == 2
    [gone] = events_for(VisitOutcome.UNREACHABLE, attempt=2)
    assert isinstance(gone, VisitMissed) and (gone.reason, gone.attempt) == ("unreachable", 2)


def test_settings_shape_the_policy() -> None:
    settings = Settings(
        environment="development",
        callback_business_hours={"P1": 2},  # type: ignore[dict-item]
        callback_delay_s=1,
        do_not_disturb_start=time(22, 0),
        visit_max_attempts=5,
    )
    policy = settings.policy()
    assert policy.callback_business_hours[Priority.P1] == 2
    assert policy.callback_business_hours[Priority.P4] == 24  # defaults fill the rest
    assert policy.callback_delay == timedelta(seconds=1)
    assert policy.do_not_disturb.start == time(22, 0) and policy.max_attempts == 5


def test_default_settings_are_a_realistic_desk() -> None:
    policy = Settings(environment="development").policy()
    assert policy.callback_delay == timedelta(hours=2)
    assert policy.care_interval == timedelta(days=90)
    assert (policy.do_not_disturb.start, policy.do_not_disturb.end) == (time(21, 0), time(9, 0))


def test_invalid_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match="visit_max_attempts"):
        Settings(environment="development", visit_max_attempts=0)
