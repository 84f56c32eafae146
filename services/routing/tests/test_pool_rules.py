"""Who may claim an offered work order (抢单), and which work orders a grid pools. Pure rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aftersales.routing.assignment import Presence, TechnicianLoad
from aftersales.routing.domain import PoolSettings, ServiceGrid, Status, Technician, WorkOrder
from aftersales.routing.pool_rules import claim_refusal, eligible
from aftersales.shared.calendar import WorkingWindow, always_open
from aftersales.shared.contracts.desk import TechnicianStatus

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # a Tuesday, 03:00 UTC
GRID = ServiceGrid(
    id="A", name="A", region_path=["310000"], calendar=always_open(), pool=PoolSettings(priorities=["P3"])
)
OFFER = WorkOrder(
    ticket_id="T",
    round=1,
    status=Status.OFFERED,
    grid_id="A",
    facts={"device_type": "air_conditioner", "category": "hardware_fault", "priority": "P3"},
    priority_rank=3,
    started_at=NOW,
    sla={},
    offer_no=1,
)


def load(
    tid: str = "t", *, active: int = 0, presence: Presence | None = None, **kw: object
) -> TechnicianLoad:
    fields: dict[str, object] = {"grid_id": "A", "tier": 1, "capacity": 2, **kw}
    tech = Technician(id=tid, name=tid, **fields)  # type: ignore[arg-type]
    return TechnicianLoad(tech, active, None, presence or Presence())


def refusal(one: TechnicianLoad, wo: WorkOrder = OFFER, *, surge_on: bool = False) -> str | None:
    return claim_refusal(one, wo, GRID, surge_on=surge_on, now=NOW, silent_after_s=60)


def test_a_grid_pools_only_the_configured_categories_and_priorities() -> None:
    assert GRID.pools("hardware_fault", "P3") and not GRID.pools("hardware_fault", "P1")
    assert not GRID.model_copy(update={"pool": None}).pools("hardware_fault", "P3")
    with pytest.raises(ValueError, match="fallback_after_s"):
        PoolSettings(fallback_after_s=0)


@pytest.mark.parametrize(
    ("one", "why"),
    [
        (load(), None),
        (load(grid_id="B"), "not_offered"),
        (load(device_types=["printer"]), "skill"),
        (load("declined-it"), "declined"),
        (load(on_duty=False), "off_shift"),
        (load(shift={3: [WorkingWindow(start="09:00", end="17:00")]}), "off_shift"),
        (load(presence=Presence(TechnicianStatus.BREAK)), "unavailable"),
        (load(presence=Presence(last_heartbeat_at=NOW - timedelta(seconds=61))), "unavailable"),
        (load(active=2), "full"),
    ],
)
def test_who_may_claim(one: TechnicianLoad, why: str | None) -> None:
    wo = OFFER if one.technician.id != "declined-it" else replace(OFFER, declined=["declined-it"])
    assert refusal(one, wo) == why


def test_escalated_work_needs_tier_two_and_surge_raises_capacity() -> None:
    escalated = replace(OFFER, escalation_level="tier2")
    assert refusal(load(), escalated) == "tier" and refusal(load(tier=2), escalated) is None
    assert refusal(load(active=2), surge_on=True) is None  # 2 x 1.5 = 3 slots in surge
    assert eligible(
        [load("a"), load("b", active=2)], OFFER, GRID, surge_on=False, now=NOW, silent_after_s=60
    ) == ["a"]
