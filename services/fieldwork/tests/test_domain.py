"""Fieldwork's rules for work orders and visits: the newest assignment wins, who may act on a work order,
and the steps of an appointment with its travel and work times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aftersales.fieldwork import domain
from aftersales.fieldwork.domain import AppointmentStatus, Booker, Point, WorkOrder, WorkOrderStatus
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.fieldwork import AppointmentRescheduled, VisitCheckedIn, VisitCheckedOut
from aftersales.shared.errors import Conflict, Forbidden, InvalidRequest, NotFound
from aftersales.shared.settings import Scope

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
WINDOW = (NOW + timedelta(hours=2), NOW + timedelta(hours=4))
T1 = Principal("t1", frozenset({Scope.TECHNICIAN}))
T2 = Principal("t2", frozenset({Scope.TECHNICIAN}))
DESK = Principal("sup", frozenset({Scope.SUPERVISOR}))
WEB = Principal("web-portal", frozenset({Scope.CHANNEL}), channel="web")
PHONE = Principal("phone-desk", frozenset({Scope.CHANNEL}), channel="phone")


def order(**fields: object) -> WorkOrder:
    defaults: dict[str, object] = {
        "status": WorkOrderStatus.ASSIGNED,
        "technician_id": "t1",
        "grid_id": "xuhui",
        "assignment_at": NOW,
        "submitted_by": "http:web-portal",
        "exists": True,
    }
    return WorkOrder("T-1", **{**defaults, **fields})  # type: ignore[arg-type]


def test_the_newest_assignment_wins_and_redeliveries_change_nothing() -> None:
    first = domain.apply_assignment(
        WorkOrder("T-1"), technician_id="t1", grid_id="g", status=WorkOrderStatus.ASSIGNED, at=NOW
    )
    assert first is not None and first.technician_id == "t1"
    again = domain.apply_assignment(
        first, technician_id="t1", grid_id="g", status=WorkOrderStatus.ASSIGNED, at=NOW
    )
    assert again is None
    later = NOW + timedelta(minutes=5)
    moved = domain.apply_assignment(
        first, technician_id="t2", grid_id="g", status=WorkOrderStatus.ASSIGNED, at=later
    )
    assert moved is not None and moved.technician_id == "t2"
    older = domain.apply_assignment(
        moved, technician_id="t1", grid_id="g", status=WorkOrderStatus.ASSIGNED, at=NOW
    )
    assert older is None
    closed = domain.WorkOrder("T-1", status=WorkOrderStatus.CLOSED, closed_at=later, exists=True)
    stale = domain.apply_assignment(
        closed, technician_id="t1", grid_id="g", status=WorkOrderStatus.ASSIGNED, at=NOW
    )
    assert stale is None


def test_who_may_act_on_a_work_order() -> None:
    assert domain.authorize(T1, order(), "T-1").technician_id == "t1"
    assert domain.authorize(DESK, order(), "T-1")
    assert domain.authorize(WEB, order(), "T-1")
    with pytest.raises(Forbidden):
        domain.authorize(T2, order(), "T-1")
    with pytest.raises(NotFound):
        domain.authorize(PHONE, order(), "T-1")
    with pytest.raises(NotFound):
        domain.authorize(DESK, WorkOrder("T-1"), "T-1")


def test_a_visit_is_booked_for_the_technician_holding_the_work_order() -> None:
    decision = domain.book("A-1", order(), WINDOW, Booker.CHANNEL, NOW)
    assert decision.state.technician_id == "t1" and decision.state.status == AppointmentStatus.BOOKED
    with pytest.raises(Conflict, match="no technician"):
        domain.book("A-1", order(technician_id=None), WINDOW, Booker.DESK, NOW)
    with pytest.raises(Conflict, match="closed"):
        domain.book("A-1", order(status=WorkOrderStatus.CLOSED), WINDOW, Booker.DESK, NOW)
    with pytest.raises(InvalidRequest, match="window_end"):
        domain.book("A-1", order(), (WINDOW[1], WINDOW[0]), Booker.DESK, NOW)
    with pytest.raises(InvalidRequest, match="12 hours"):
        domain.book("A-1", order(), (WINDOW[0], WINDOW[0] + timedelta(hours=13)), Booker.DESK, NOW)
    with pytest.raises(InvalidRequest, match="a year ahead"):
        domain.book(
            "A-1", order(), (NOW + timedelta(days=400), NOW + timedelta(days=400, hours=1)), Booker.DESK, NOW
        )
    with pytest.raises(InvalidRequest, match="over"):
        domain.book("A-1", order(), (NOW - timedelta(hours=3), NOW - timedelta(hours=1)), Booker.DESK, NOW)


def test_a_visit_from_departure_to_check_out_measures_travel_and_work() -> None:
    booked = domain.book("A-1", order(), WINDOW, Booker.DESK, NOW).state
    moved = domain.reschedule(booked, order(), (WINDOW[0] + timedelta(hours=1), WINDOW[1]), NOW)
    [event] = moved.events
    assert isinstance(event, AppointmentRescheduled) and event.reschedules == 1
    on_the_way = domain.depart(moved.state, NOW + timedelta(hours=2)).state
    arrived = domain.check_in(on_the_way, order(), NOW + timedelta(hours=2, minutes=25), Point(31.2, 121.4))
    [checked_in] = arrived.events
    assert isinstance(checked_in, VisitCheckedIn) and checked_in.travel_s == 25 * 60
    assert "31.2" not in checked_in.model_dump_json()  # the customer's place stays in fieldwork
    left = domain.check_out(arrived.state, NOW + timedelta(hours=3), None, "replaced the fan")
    [checked_out] = left.events
    assert isinstance(checked_out, VisitCheckedOut) and checked_out.work_s == 35 * 60
    assert left.state.status == AppointmentStatus.COMPLETED
    assert domain.check_out(left.state, NOW + timedelta(hours=4), None, "again").events == ()
    with pytest.raises(Conflict, match="completed"):
        domain.reschedule(left.state, order(), WINDOW, NOW)
    with pytest.raises(Conflict):
        domain.record_no_show(left.state, "customer", NOW)


def test_no_show_and_cancel_only_before_the_visit_starts() -> None:
    booked = domain.book("A-1", order(), WINDOW, Booker.DESK, NOW).state
    missed = domain.record_no_show(booked, "customer", NOW).state
    assert missed.status == AppointmentStatus.NO_SHOW and missed.no_show == "customer"
    assert domain.cancel(missed, "requested", NOW).events == ()
    with pytest.raises(Conflict, match="check in"):
        domain.check_in(missed, order(), NOW, None)


def test_waiting_for_parts_is_said_once_per_part() -> None:
    first = domain.wait_for_parts(order(), "FAN-9", 1, NOW)
    assert len(first.events) == 1 and first.state.waiting_for == "FAN-9"
    assert domain.wait_for_parts(first.state, "FAN-9", 1, NOW).events == ()
