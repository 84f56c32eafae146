"""Grid matching, the work-order state machine, SLA policies and clocks, grid planning, demo data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from routing_demo import demo_data

from aftersales.routing.domain import (
    Action,
    GridLoad,
    ServiceGrid,
    Status,
    Technician,
    check_transition,
    match_grid,
    plan_grids,
)
from aftersales.routing.sla import SlaPolicy, default_policy, plan_clock
from aftersales.shared.calendar import always_open
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.errors import Conflict


def grid(gid: str, path: list[str], devices: list[str] | None = None) -> ServiceGrid:
    return ServiceGrid(id=gid, name=gid, region_path=path, device_types=devices or [], calendar=always_open())


def test_most_specific_grid_for_region_and_device() -> None:
    grids = [
        grid("city", ["310000", "310100"]),
        grid("xuhui", ["310000", "310100", "310104"]),
        grid("xuhui-ac", ["310000", "310100", "310104"], ["air_conditioner"]),
        grid("street", ["310000", "310100", "310104", "310104001"[:6]]),
    ]
    assert match_grid(grids, "310000/310100/310104/123456", "tv").id == "xuhui"  # type: ignore[union-attr]
    assert match_grid(grids, "310000/310100/310104", "air_conditioner").id == "xuhui-ac"  # type: ignore[union-attr]
    assert match_grid(grids, "310000/310100/310101", "tv").id == "city"  # type: ignore[union-attr]
    assert match_grid(grids, "310000/310100/310104/310104", "tv").id == "street"  # type: ignore[union-attr]
    assert match_grid(grids, "110000/110100", "tv") is None


def test_state_machine_refuses_illegal_transitions() -> None:
    assert check_transition(Action.ACCEPT, Status.ASSIGNED) is Status.ACCEPTED
    assert check_transition(Action.START, Status.PENDING_CUSTOMER) is Status.IN_PROGRESS
    with pytest.raises(Conflict, match="cannot resolve a work order that is assigned"):
        check_transition(Action.RESOLVE, Status.ASSIGNED)
    with pytest.raises(Conflict):
        check_transition(Action.ACCEPT, Status.RESOLVED)
    with pytest.raises(Conflict):
        check_transition(Action.PENDING_CUSTOMER, Status.QUEUED)


def test_policy_table_is_complete_and_tiers_are_tighter() -> None:
    policy = default_policy()
    std = policy.target(Priority.P2, CustomerTier.STANDARD)
    key = policy.target(Priority.P2, CustomerTier.KEY_ACCOUNT)
    assert key.resolution_minutes < std.resolution_minutes
    with pytest.raises(ValidationError, match="targets missing"):
        SlaPolicy(targets=policy.targets[:-1])


def test_clock_plan_walks_thresholds() -> None:
    start = datetime(2026, 11, 24, tzinfo=UTC)
    plan = plan_clock(started_at=start, target_minutes=100, calendar=always_open(), pauses=[], fired_pct=[])
    assert (plan.next_pct, plan.next_due_at, plan.due_at) == (
        50,
        start + timedelta(minutes=50),
        start + timedelta(minutes=100),
    )
    plan = plan_clock(started_at=start, target_minutes=100, calendar=always_open(), pauses=[], fired_pct=[50])
    assert (plan.next_pct, plan.next_due_at) == (75, start + timedelta(minutes=75))
    paused = plan_clock(
        started_at=start,
        target_minutes=100,
        calendar=always_open(),
        pauses=[(start + timedelta(minutes=10), start + timedelta(minutes=40))],
        fired_pct=[50, 75],
    )
    assert (paused.next_pct, paused.next_due_at) == (100, start + timedelta(minutes=130))
    done = plan_clock(
        started_at=start, target_minutes=100, calendar=always_open(), pauses=[], fired_pct=[50, 75, 100]
    )
    assert done.next_pct is None


def test_grid_planning_flags_dense_grids_and_splits_by_busiest_children() -> None:
    loads = [
        GridLoad("pudong", ["310000", "310100", "310115"], 60, 4, {"115005": 35, "115007": 15, "115009": 10}),
        GridLoad("xuhui", ["310000", "310100", "310104"], 8, 4, {"104001": 8}),
    ]
    [finding] = plan_grids(loads, threshold=5)
    assert finding.grid_id == "pudong" and finding.per_technician == 15
    assert finding.suggested_split[0] == ["115005"]
    assert len(finding.suggested_split) >= 2
    assert "310000/310100/310115/115005" in finding.suggestion


def test_demo_data_is_valid_and_consistent() -> None:
    data = demo_data()
    grids = [ServiceGrid.model_validate(g) for g in data["grids"]]
    techs = [Technician.model_validate(t) for t in data["technicians"]]
    ids = [g.id for g in grids]
    for i, g in enumerate(grids):
        assert set(g.neighbours) <= set(ids[:i])  # creatable in order
        assert g.calendar.timezone == "Asia/Shanghai" and g.calendar.holidays
    assert {t.tier for t in techs} == {1, 2} and len(techs) >= 10
    assert {t.grid_id for t in techs} <= set(ids)
    assert any(t.id == "tech-demo" for t in techs)  # the dev technician token's subject
