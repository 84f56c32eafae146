"""The complaint workflow: every legal and every illegal transition, deadlines, reopen, classification."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from aftersales.feedback.domain import (
    TRANSITIONS,
    Complaint,
    ComplaintPolicy,
    ComplaintSource,
    classification_key,
    classify,
    close_overdue,
    open_complaint,
    step_overdue,
    transition,
    within_deadline,
)
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState
from aftersales.shared.errors import Conflict, InvalidRequest

S = ComplaintState
POLICY = ComplaintPolicy()
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

LEGAL = {
    (S.RECEIVED, S.INVESTIGATING),
    (S.INVESTIGATING, S.RESOLUTION_PROPOSED),
    (S.RESOLUTION_PROPOSED, S.REPLIED),
    (S.RESOLUTION_PROPOSED, S.INVESTIGATING),
    (S.REPLIED, S.CLOSED),
    (S.REPLIED, S.INVESTIGATING),
    (S.CLOSED, S.INVESTIGATING),  # reopen
}
# Written out, not derived from LEGAL: the two lists are checked against each other and against every
# pair of states, so a state or a transition nobody classified fails a test.
ILLEGAL = {
    (S.RECEIVED, S.RECEIVED),
    (S.RECEIVED, S.RESOLUTION_PROPOSED),
    (S.RECEIVED, S.REPLIED),
    (S.RECEIVED, S.CLOSED),
    (S.INVESTIGATING, S.RECEIVED),
    (S.INVESTIGATING, S.INVESTIGATING),
    (S.INVESTIGATING, S.REPLIED),
    (S.INVESTIGATING, S.CLOSED),
    (S.RESOLUTION_PROPOSED, S.RECEIVED),
    (S.RESOLUTION_PROPOSED, S.RESOLUTION_PROPOSED),
    (S.RESOLUTION_PROPOSED, S.CLOSED),
    (S.REPLIED, S.RECEIVED),
    (S.REPLIED, S.RESOLUTION_PROPOSED),
    (S.REPLIED, S.REPLIED),
    (S.CLOSED, S.RECEIVED),
    (S.CLOSED, S.RESOLUTION_PROPOSED),
    (S.CLOSED, S.REPLIED),
    (S.CLOSED, S.CLOSED),
}


def complaint(state: ComplaintState = S.RECEIVED, owner: str | None = "sup-1") -> Complaint:
    fresh = open_complaint(
        POLICY,
        complaint_id="CP-1",
        source=ComplaintSource.API,
        scope=ComplaintScope.INDIVIDUAL,
        now=NOW,
        owner_id=owner,
    )
    if state == S.CLOSED:
        return Complaint(**{**_fields(fresh), "state": S.CLOSED, "closed_at": NOW, "step_deadline_at": None})
    return Complaint(**{**_fields(fresh), "state": state})


def _fields(c: Complaint) -> dict[str, object]:
    return {name: getattr(c, name) for name in Complaint.__dataclass_fields__}


def test_the_table_is_exactly_the_documented_workflow() -> None:
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("source", "target"), sorted(LEGAL))
def test_legal_transition(source: ComplaintState, target: ComplaintState) -> None:
    before = complaint(source)
    later = NOW + timedelta(hours=1)
    after = transition(POLICY, before, target, "owner-2", later)
    assert after.state == target
    assert after.owner_id == "owner-2"
    assert after.seq == before.seq + 1
    if target == S.CLOSED:
        assert after.step_deadline_at is None and after.closed_at == later
    else:
        assert after.step_deadline_at == later + POLICY.step_deadlines[target]
        assert after.closed_at is None


@pytest.mark.parametrize(("source", "target"), sorted(ILLEGAL))
def test_illegal_transition_is_a_conflict_and_changes_nothing(
    source: ComplaintState, target: ComplaintState
) -> None:
    before = complaint(source)
    with pytest.raises(Conflict) as err:
        transition(POLICY, before, target, "owner-2", NOW)
    assert err.value.status == 409
    assert target.value in err.value.message
    assert before == complaint(source)


def test_every_pair_of_states_is_classified_exactly_once() -> None:
    assert not LEGAL & ILLEGAL
    assert set(itertools.product(S, S)) == LEGAL | ILLEGAL


def test_new_complaint_has_acknowledge_and_close_deadlines() -> None:
    c = complaint()
    assert c.state == S.RECEIVED
    assert c.step_deadline_at == NOW + timedelta(hours=24)
    assert c.deadline_at == NOW + timedelta(days=7)


def test_owner_is_required_to_acknowledge() -> None:
    with pytest.raises(InvalidRequest) as err:
        transition(POLICY, complaint(owner=None), S.INVESTIGATING, None, NOW)
    assert err.value.field == "owner_id"
    assert transition(POLICY, complaint(owner="sup-1"), S.INVESTIGATING, None, NOW).owner_id == "sup-1"


def test_reopen_starts_a_new_cycle_with_a_fresh_deadline() -> None:
    closed = complaint(S.CLOSED)
    later = NOW + timedelta(days=10)
    reopened = transition(POLICY, closed, S.INVESTIGATING, None, later)
    assert (reopened.cycle, reopened.escalated, reopened.closed_at) == (1, False, None)
    assert reopened.deadline_at == later + POLICY.close_within
    assert close_overdue(reopened, 1) and not close_overdue(reopened, 0)


def test_a_complaint_takes_at_most_max_steps_steps_so_its_history_stays_bounded() -> None:
    policy = ComplaintPolicy(max_steps=6)
    # Round and round: proposed, rejected, proposed again ... each step one more history entry.
    walk = itertools.cycle([S.INVESTIGATING, S.RESOLUTION_PROPOSED, S.REPLIED, S.CLOSED])
    current = complaint()
    for n in range(1, 7):
        current = transition(policy, current, next(walk), None, NOW + timedelta(hours=n))
        assert current.steps == n
    with pytest.raises(Conflict) as err:
        transition(policy, current, S.REPLIED, None, NOW + timedelta(hours=7))
    assert err.value.field == "history" and "6 workflow steps" in err.value.message


def test_timers_act_only_on_their_own_step_and_cycle() -> None:
    c = complaint()
    assert step_overdue(c, 1)
    moved = transition(POLICY, c, S.INVESTIGATING, None, NOW)
    assert not step_overdue(moved, 1) and step_overdue(moved, 2)
    assert not close_overdue(complaint(S.CLOSED), 0)


def test_within_deadline() -> None:
    replied = complaint(S.REPLIED)
    assert within_deadline(transition(POLICY, replied, S.CLOSED, None, NOW + timedelta(days=6)))
    assert not within_deadline(transition(POLICY, replied, S.CLOSED, None, NOW + timedelta(days=8)))


@pytest.mark.parametrize(
    ("category", "model", "key"),
    [
        (Category.HARDWARE_FAULT, "WM-200", "model:wm-200"),
        (Category.COMPLAINT, " WM-200 ", "model:wm-200"),
        (Category.HARDWARE_FAULT, None, "category:hardware_fault"),
        (Category.COMPLAINT, None, None),  # the channel's own category says nothing about the product
        (Category.OTHER, None, None),
        (None, None, None),
    ],
)
def test_classification_key(category: Category | None, model: str | None, key: str | None) -> None:
    assert classification_key(category, model) == key


@pytest.mark.parametrize(
    ("similar", "scope"),
    [
        (0, ComplaintScope.INDIVIDUAL),
        (1, ComplaintScope.INDIVIDUAL),
        (2, ComplaintScope.COMMON_CAUSE),
        (9, ComplaintScope.COMMON_CAUSE),
    ],
)
def test_common_cause_at_threshold(similar: int, scope: ComplaintScope) -> None:
    assert POLICY.common_cause_threshold == 3
    assert classify(POLICY, "model:wm-200", similar) == scope


def test_no_key_is_always_individual() -> None:
    assert classify(POLICY, None, 100) == ComplaintScope.INDIVIDUAL
