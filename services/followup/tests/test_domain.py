"""Visit policy table and the visit state machine."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aftersales.followup.domain import (
    CustomerFacts,
    Effect,
    FollowUpPolicy,
    Resolution,
    Visit,
    VisitStatus,
    becomes_due,
    callback_hours,
    following_care,
    goes_missed,
    new_visit,
    plan_visits,
    record_outcome,
    reschedule,
)
from aftersales.shared.contracts.common import Category, CustomerTier, Priority
from aftersales.shared.contracts.events import VisitKind, VisitOutcome
from aftersales.shared.errors import Conflict, InvalidRequest

POLICY = FollowUpPolicy()
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Tuesday 10:00 in Shanghai: inside business hours, outside do-not-disturb.
RESOLVED = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI).astimezone(UTC)


def resolution(category: Category = Category.SOFTWARE_FAULT, priority: Priority = Priority.P3) -> Resolution:
    return Resolution("T-1", 1, "tech-1", "grid-1", priority, category, RESOLVED)


def customer(tier: CustomerTier = CustomerTier.STANDARD) -> CustomerFacts:
    return CustomerFacts("C-1", tier, "Asia/Shanghai")


@pytest.mark.parametrize(
    ("priority", "category", "tier", "hours"),
    [
        (Priority.P1, Category.SOFTWARE_FAULT, CustomerTier.STANDARD, 4),
        (Priority.P2, Category.SOFTWARE_FAULT, CustomerTier.STANDARD, 8),
        (Priority.P3, Category.SOFTWARE_FAULT, CustomerTier.STANDARD, 16),
        (Priority.P4, Category.USAGE_QUESTION, CustomerTier.STANDARD, 24),
        (Priority.P4, Category.COMPLAINT, CustomerTier.STANDARD, 4),  # category cap tightens
        (Priority.P1, Category.COMPLAINT, CustomerTier.STANDARD, 4),  # a cap never loosens
        (Priority.P4, Category.RETURN_REFUND, CustomerTier.STANDARD, 8),
        (Priority.P4, Category.HARDWARE_FAULT, CustomerTier.STANDARD, 16),
        (Priority.P3, Category.SOFTWARE_FAULT, CustomerTier.GOLD, 12),
        (Priority.P3, Category.SOFTWARE_FAULT, CustomerTier.KEY_ACCOUNT, 8),
        (Priority.P1, Category.COMPLAINT, CustomerTier.KEY_ACCOUNT, 2),
    ],
)
def test_callback_policy_table(
    priority: Priority, category: Category, tier: CustomerTier, hours: float
) -> None:
    assert callback_hours(POLICY, priority, category, tier) == hours


@pytest.mark.parametrize(
    ("category", "tier", "kinds"),
    [
        (Category.SOFTWARE_FAULT, CustomerTier.STANDARD, [VisitKind.CALLBACK]),
        (Category.USAGE_QUESTION, CustomerTier.GOLD, [VisitKind.CALLBACK]),
        (Category.HARDWARE_FAULT, CustomerTier.STANDARD, [VisitKind.CALLBACK, VisitKind.ON_SITE]),
        (Category.INSTALLATION, CustomerTier.STANDARD, [VisitKind.CALLBACK, VisitKind.ON_SITE]),
        (Category.SOFTWARE_FAULT, CustomerTier.KEY_ACCOUNT, [VisitKind.CALLBACK, VisitKind.CARE]),
        (
            Category.HARDWARE_FAULT,
            CustomerTier.KEY_ACCOUNT,
            [VisitKind.CALLBACK, VisitKind.ON_SITE, VisitKind.CARE],
        ),
    ],
)
def test_which_visits_a_resolution_gets(
    category: Category, tier: CustomerTier, kinds: list[VisitKind]
) -> None:
    plans = plan_visits(POLICY, resolution(category), customer(tier), needs_care=True)
    assert [p.kind for p in plans] == kinds


def test_no_second_care_visit_while_one_is_open() -> None:
    plans = plan_visits(POLICY, resolution(), customer(CustomerTier.KEY_ACCOUNT), needs_care=False)
    assert [p.kind for p in plans] == [VisitKind.CALLBACK]


def test_callback_due_after_delay_and_deadline_in_business_hours() -> None:
    [callback] = plan_visits(POLICY, resolution(priority=Priority.P1), customer(), needs_care=False)
    assert callback.due_at == RESOLVED + POLICY.callback_delay
    assert callback.deadline_at == RESOLVED + timedelta(hours=4)  # 10:00 + 4 business hours = 14:00


def test_callback_falling_into_do_not_disturb_moves_to_the_morning() -> None:
    evening = datetime(2026, 11, 24, 20, 0, tzinfo=SHANGHAI).astimezone(UTC)
    res = replace(resolution(), resolved_at=evening)
    [callback] = plan_visits(POLICY, res, customer(), needs_care=False)  # 20:00 + 2 h = 22:00 -> 09:00
    assert callback.due_at == datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI).astimezone(UTC)
    assert callback.deadline_at >= callback.due_at


def test_on_site_check_goes_to_the_technician_and_care_is_ninety_days_out() -> None:
    plans = plan_visits(
        POLICY, resolution(Category.HARDWARE_FAULT), customer(CustomerTier.KEY_ACCOUNT), needs_care=True
    )
    on_site = next(p for p in plans if p.kind == VisitKind.ON_SITE)
    care = next(p for p in plans if p.kind == VisitKind.CARE)
    assert on_site.agent_id == "tech-1"
    assert on_site.due_at > RESOLVED and on_site.deadline_at > on_site.due_at
    assert care.due_at - RESOLVED == timedelta(days=90)


def visit(
    status: VisitStatus = VisitStatus.DUE, attempt: int = 1, kind: VisitKind = VisitKind.CALLBACK
) -> Visit:
    return Visit(
        id="V-1",
        ticket_id="T-1",
        kind=kind,
        status=status,
        round=1,
        due_at=RESOLVED,
        deadline_at=RESOLVED + timedelta(hours=4),
        timezone="Asia/Shanghai",
        attempt=attempt,
        customer_id="C-1",
        care_n=1 if kind == VisitKind.CARE else None,
    )


NOW = RESOLVED + timedelta(hours=1)


@pytest.mark.parametrize("status", [VisitStatus.SCHEDULED, VisitStatus.DUE])
def test_confirmed_resolved_completes(status: VisitStatus) -> None:
    decision = record_outcome(POLICY, visit(status), VisitOutcome.CONFIRMED_RESOLVED, NOW)
    assert decision.visit.status == VisitStatus.COMPLETED
    assert decision.effects == (Effect.COMPLETED,)


def test_not_resolved_completes_and_requests_a_reopen() -> None:
    decision = record_outcome(POLICY, visit(), VisitOutcome.NOT_RESOLVED, NOW)
    assert decision.visit.status == VisitStatus.COMPLETED
    assert decision.visit.outcome == VisitOutcome.NOT_RESOLVED
    assert decision.effects == (Effect.COMPLETED, Effect.REOPEN_REQUESTED)


def test_unreachable_retries_later_outside_do_not_disturb_then_gives_up() -> None:
    current = visit()
    for attempt in range(1, POLICY.max_attempts):
        decision = record_outcome(POLICY, current, VisitOutcome.UNREACHABLE, NOW)
        assert decision.effects == (Effect.RESCHEDULED,)
        current = decision.visit
        assert (current.status, current.attempt, current.seq) == (
            VisitStatus.SCHEDULED,
            attempt + 1,
            attempt + 1,
        )
        assert current.due_at >= NOW + POLICY.retry_after
        assert not POLICY.do_not_disturb.contains(current.due_at.astimezone(SHANGHAI).time())
        assert current.deadline_at > current.due_at
    final = record_outcome(POLICY, current, VisitOutcome.UNREACHABLE, NOW)
    assert final.visit.status == VisitStatus.MISSED
    assert final.effects == (Effect.MISSED,)


@pytest.mark.parametrize("status", [VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED])
@pytest.mark.parametrize("outcome", list(VisitOutcome))
def test_closed_visit_refuses_outcomes(status: VisitStatus, outcome: VisitOutcome) -> None:
    with pytest.raises(Conflict):
        record_outcome(POLICY, visit(status), outcome, NOW)


@pytest.mark.parametrize("status", [VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED])
def test_closed_visit_refuses_reschedule(status: VisitStatus) -> None:
    with pytest.raises(Conflict):
        reschedule(POLICY, visit(status), NOW + timedelta(hours=2), NOW)


def test_reschedule_respects_do_not_disturb_and_bumps_seq() -> None:
    late = datetime(2026, 11, 24, 23, 0, tzinfo=SHANGHAI)
    moved = reschedule(POLICY, visit(), late, NOW, agent_id="agent-7")
    assert moved.due_at == datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI).astimezone(UTC)
    assert (moved.status, moved.seq, moved.agent_id) == (VisitStatus.SCHEDULED, 2, "agent-7")
    assert moved.deadline_at >= moved.due_at


def test_reschedule_into_the_past_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as err:
        reschedule(POLICY, visit(), NOW - timedelta(hours=2), NOW)
    assert err.value.field == "due_at"


def test_a_visit_is_moved_at_most_max_reschedules_times_so_its_history_stays_bounded() -> None:
    policy = replace(POLICY, max_reschedules=3)
    current = record_outcome(policy, visit(), VisitOutcome.UNREACHABLE, NOW).visit  # a retry is no move
    assert (current.attempt, current.reschedules) == (2, 0)
    for n in range(1, 4):
        current = reschedule(policy, current, NOW + timedelta(days=n), NOW)
        assert current.reschedules == n
    with pytest.raises(Conflict) as err:
        reschedule(policy, current, NOW + timedelta(days=5), NOW)
    assert err.value.field == "history" and "3 times" in err.value.message
    # The outcome still lands: the cap stops moves, not the visit.
    assert record_outcome(policy, current, VisitOutcome.CONFIRMED_RESOLVED, NOW).visit.status == "completed"


def test_timers_only_act_on_their_own_schedule() -> None:
    scheduled = visit(VisitStatus.SCHEDULED)
    assert becomes_due(scheduled, 1) and not becomes_due(scheduled, 2)
    assert not becomes_due(visit(VisitStatus.DUE), 1)
    assert goes_missed(visit(VisitStatus.DUE), 1) and not goes_missed(visit(VisitStatus.COMPLETED), 1)


def test_care_visit_closing_schedules_the_next_cycle() -> None:
    care = visit(kind=VisitKind.CARE)
    decision = record_outcome(POLICY, care, VisitOutcome.CONFIRMED_RESOLVED, NOW)
    assert Effect.NEXT_CARE in decision.effects and Effect.REOPEN_REQUESTED not in decision.effects
    following = following_care(POLICY, decision.visit, NOW)
    assert following.id == "V-care-C-1-2" and following.status == VisitStatus.SCHEDULED
    assert following.due_at - NOW >= POLICY.care_interval


def test_visit_ids_are_deterministic_per_ticket_round_and_kind() -> None:
    [plan] = plan_visits(POLICY, resolution(), customer(), needs_care=False)
    assert new_visit(plan, resolution(), customer()).id == "V-T-1-r1-callback"
    assert new_visit(plan, replace(resolution(), round=2), customer()).id == "V-T-1-r2-callback"
