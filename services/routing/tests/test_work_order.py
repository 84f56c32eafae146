"""The typed work order as the rules read it, the guard of a write, and grid loads for planning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aftersales.routing.assignment import need_of
from aftersales.routing.clocks import clock_running, pauses_of, timer_is_current
from aftersales.routing.domain import ServiceGrid, Status, grid_loads
from aftersales.routing.store import Guard, work_order_of
from aftersales.shared.calendar import always_open
from aftersales.shared.contracts.events import SlaClock

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def stored(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": "T-1",
        "round": 2,
        "status": "pending_customer",
        "grid_id": "g1",
        "facts": {"priority": "P2", "category": "installation", "device_type": "washer"},
        "priority_rank": 2,
        "started_at": T0,
        "pauses": [{"start": T0, "end": T0}],
        "paused_since": T0,
        "technician_id": "t1",
        "escalation_level": "tier2",
        "sla": {
            "first_response": {"generation": 1, "fired": [50], "next_pct": 75, "stopped_at": T0},
            "resolution": {"generation": 0, "fired": [], "next_pct": 50, "stopped_at": None},
        },
    }
    doc.update(changes)
    return doc


def test_a_stored_work_order_reads_as_typed_and_the_clock_rules_agree_with_the_document() -> None:
    doc = stored()
    wo = work_order_of(doc)
    assert (wo.ticket_id, wo.round, wo.status, wo.holds_slot) == ("T-1", 2, Status.PENDING_CUSTOMER, True)
    assert (wo.priority, wo.category, wo.escalation_due, wo.exclude) == ("P2", "installation", False, [])
    assert pauses_of(wo) == pauses_of(doc) == [(T0, T0), (T0, None)]
    for clock in SlaClock:
        assert clock_running(wo, clock) == clock_running(doc, clock)
    payload = {"round": 2, "clock": "resolution", "pct": 50, "generation": 0}
    assert timer_is_current(wo, payload) is timer_is_current(doc, payload) is False  # paused
    running = stored(status="in_progress", paused_since=None)
    assert timer_is_current(work_order_of(running), payload) is timer_is_current(running, payload) is True


def test_need_of_a_work_order_escalated_to_tier_two() -> None:
    need = need_of(work_order_of(stored()), exclude=["t1"])
    assert (need.grid_id, need.device_type, need.category, need.priority) == (
        "g1",
        "washer",
        "installation",
        "P2",
    )
    assert need.min_tier == 2 and need.exclude == frozenset({"t1"})
    assert need_of(work_order_of(stored(escalation_level=None)), exclude=[]).min_tier == 1


def test_a_guard_names_only_what_it_checks() -> None:
    assert Guard(round=3).filter() == {"round": 3}
    full = Guard(
        round=3,
        status=Status.ASSIGNED,
        technician_id=None,
        check_technician=True,
        generations={"resolution": 2},
    )
    assert full.filter() == {
        "round": 3,
        "status": "assigned",
        "technician_id": None,
        "sla.resolution.generation": 2,
    }
    assert type(full.filter()["status"]) is str


def test_grid_loads_split_open_work_by_child_region() -> None:
    grid = ServiceGrid(id="g1", name="g1", region_path=["310000", "310100"], calendar=always_open())
    counts = {
        ("g1", "310000/310100/310104"): 3,
        ("g1", "310000/310100"): 1,
        ("g2", "310000/310100/310101"): 9,
    }
    [load] = grid_loads({"g1": grid}, counts, {"g1": 2})
    assert (load.grid_id, load.open_work_orders, load.technicians_on_duty) == ("g1", 4, 2)
    assert load.open_by_child_region == {"310104": 3, "(grid level)": 1}
