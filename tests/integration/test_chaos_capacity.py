"""The chaos run's capacity check from the event history (chaos_capacity.py), on hand-made histories:
it must see an excess the final counters cannot (one freed again before the end), forgive the stamp
order of two handlers within the allowance, and free what cancellations free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chaos_capacity import capacity_history, holder_intervals

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def at(s: float) -> str:
    return (T0 + timedelta(seconds=s)).isoformat()


def ev(kind: str, ticket: str, s: float, **data: Any) -> tuple[dict[str, str], dict[str, Any]]:
    return (
        {"ce_type": f"aftersales.assignment.{kind}.v1"},
        {"ticket_id": ticket, "round": 1, "occurred_at": at(s), **data},
    )


def cancelled(ticket: str, s: float) -> tuple[dict[str, str], dict[str, Any]]:
    return {"ce_type": "aftersales.ticket.cancelled.v1"}, {"ticket_id": ticket, "cancelled_at": at(s)}


def judge(assignments: list[Any], tickets: list[Any], capacity: int, allowance_s: float = 5.0) -> Any:
    intervals = holder_intervals(assignments, tickets)
    techs = {tech for tech in intervals}
    return capacity_history(intervals, {t: capacity for t in techs}), allowance_s


def test_an_excess_freed_again_before_the_end_is_found() -> None:
    # Three work orders held by one technician of capacity 2 for a minute; then one escalates away:
    # the final count (2) is within capacity, the history is not.
    history, allowance = judge(
        [
            ev("assigned", "a", 0, technician_id="x"),
            ev("assigned", "b", 1, technician_id="x"),
            ev("assigned", "c", 2, technician_id="x"),
            ev("escalated", "c", 62, from_technician_id="x", to_technician_id="y"),
        ],
        [],
        capacity=2,
    )
    over = history.over(allowance)
    assert [(e.technician_id, e.held, e.seconds) for e in over] == [("x", 3, 60.0)]
    assert history.peak == {"x": 3, "y": 1}


def test_an_acquire_stamped_just_before_the_release_it_waited_for_is_forgiven_within_the_allowance() -> None:
    work = [
        ev("assigned", "a", 0, technician_id="x"),
        ev("assigned", "b", 10.0, technician_id="x"),  # stamped before b's slot was free...
        ev("escalated", "a", 10.4, from_technician_id="x", to_technician_id="y"),  # ...by this
    ]
    history, allowance = judge(work, [], capacity=1)
    assert len(history.excesses) == 1 and history.excesses[0].seconds == 0.4
    assert history.over(allowance) == []
    assert len(history.over(0.1)) == 1  # the same history with no allowance is an excess


def test_what_a_cancellation_or_a_supervisor_escalation_does_to_the_slot() -> None:
    work = [
        ev("assigned", "a", 0, technician_id="x"),
        ev("escalated", "a", 5, from_technician_id="x", to_technician_id=None, level="supervisor"),
        ev("assigned", "b", 30, technician_id="x"),  # a still held: over capacity 1 from here
        ev("assigned", "c", 40, technician_id="z"),
    ]
    # The supervisor escalation leaves `a` with x; `a` is cancelled at 100 s, freeing x's slot then.
    history, allowance = judge(work, [cancelled("a", 100)], capacity=1)
    assert [(e.technician_id, e.seconds) for e in history.over(allowance)] == [("x", 70.0)]
    # Never freed: over until the end of the history.
    history, allowance = judge(work, [], capacity=1)
    assert [e.end for e in history.over(allowance)] == [None]


def test_a_cancellation_routing_read_after_assigning_frees_the_slot_at_the_assignment() -> None:
    work = [ev("assigned", "a", 50, technician_id="x"), ev("assigned", "b", 51, technician_id="x")]
    history, allowance = judge(work, [cancelled("a", 10)], capacity=1)
    assert history.over(allowance) == [] and history.peak == {"x": 1}


def test_a_handback_and_a_resolve_free_the_slot() -> None:
    work = [
        ev("assigned", "a", 0, technician_id="x"),
        ev("reassigned", "a", 20, from_technician_id="x", to_technician_id="y", reason="r"),
        ev("assigned", "b", 30, technician_id="x"),
        ev("resolved", "b", 40, technician_id="x"),
        ev("assigned", "c", 50, technician_id="x"),
    ]
    history, _ = judge(work, [], capacity=1)
    assert history.excesses == [] and history.peak == {"x": 1, "y": 1}
