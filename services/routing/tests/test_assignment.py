"""Assignment: never over capacity, fair spread, tiers, overflow and surge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aftersales.routing.assignment import (
    TechnicianLoad,
    WorkNeed,
    backlog_surge_change,
    effective_capacity,
    rank_candidates,
)
from aftersales.routing.domain import ServiceGrid, SurgeSettings, Technician
from aftersales.shared.calendar import always_open

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def grid(gid: str, neighbours: list[str] | None = None, factor: float = 1.5) -> ServiceGrid:
    return ServiceGrid(
        id=gid,
        name=gid,
        region_path=["310000"],
        calendar=always_open(),
        neighbours=neighbours or [],
        surge=SurgeSettings(backlog_threshold=5, capacity_factor=factor),
    )


def tech(tid: str, grid_id: str = "A", *, tier: int = 1, capacity: int = 3, **kw: object) -> Technician:
    return Technician(id=tid, name=tid, grid_id=grid_id, tier=tier, capacity=capacity, **kw)  # type: ignore[arg-type]


class Simulation:
    """The store's conditional update, in memory: a slot is taken only below the effective capacity."""

    def __init__(
        self, techs: list[Technician], grids: dict[str, ServiceGrid], surge: frozenset[str] = frozenset()
    ):
        self.techs = {t.id: t for t in techs}
        self.load = {t.id: 0 for t in techs}
        self.last: dict[str, datetime | None] = {t.id: None for t in techs}
        self.grids, self.surge = grids, surge
        self.clock = NOW

    def assign(self, need: WorkNeed) -> str | None:
        loads = [TechnicianLoad(t, self.load[t.id], self.last[t.id]) for t in self.techs.values()]
        for cand in rank_candidates(need, loads, self.grids, self.surge, NOW):
            if self.load[cand.technician_id] < cand.effective_capacity:  # the atomic $lt guard
                self.load[cand.technician_id] += 1
                self.clock += timedelta(seconds=1)
                self.last[cand.technician_id] = self.clock
                return cand.technician_id
        return None


NEED = WorkNeed("A", "air_conditioner", "hardware_fault", "P3")


@settings(max_examples=150, deadline=None)
@given(
    capacities=st.lists(st.integers(0, 6), min_size=1, max_size=6),
    ops=st.lists(st.one_of(st.just("arrive"), st.integers(0, 5)), max_size=80),
)
def test_never_exceeds_capacity_and_never_queues_while_someone_is_free(
    capacities: list[int], ops: list[object]
) -> None:
    techs = [tech(f"t{i}", capacity=c) for i, c in enumerate(capacities)]
    sim = Simulation(techs, {"A": grid("A")})
    for op in ops:
        if op == "arrive":
            free_before = sum(t.capacity - sim.load[t.id] for t in techs)
            got = sim.assign(NEED)
            assert (got is None) == (free_before == 0)
        else:
            tid = f"t{int(op) % len(techs)}"  # a release
            sim.load[tid] = max(sim.load[tid] - 1, 0)
        assert all(sim.load[t.id] <= t.capacity for t in techs)


@settings(max_examples=100, deadline=None)
@given(n_techs=st.integers(1, 8), capacity=st.integers(1, 10), data=st.data())
def test_equal_technicians_share_work_evenly(n_techs: int, capacity: int, data: st.DataObject) -> None:
    arrivals = data.draw(st.integers(0, n_techs * capacity))
    techs = [tech(f"t{i}", capacity=capacity) for i in range(n_techs)]
    sim = Simulation(techs, {"A": grid("A")})
    for _ in range(arrivals):
        assert sim.assign(NEED) is not None
    loads = list(sim.load.values())
    assert max(loads) - min(loads) <= 1


def test_round_robin_among_equally_loaded_technicians() -> None:
    techs = [tech("a", capacity=10), tech("b", capacity=10), tech("c", capacity=10)]
    sim = Simulation(techs, {"A": grid("A")})
    order = [sim.assign(NEED) for _ in range(6)]
    assert sorted(order[:3]) == ["a", "b", "c"] and order[3:] == order[:3]


def test_skills_tier_and_duty_filter_candidates() -> None:
    techs = [
        tech("fridge-only", device_types=["refrigerator"]),
        tech("installer", categories=["installation"]),
        tech("off", on_duty=False),
        tech("specialist", tier=2),
        tech("ok"),
    ]
    loads = [TechnicianLoad(t, 0, None) for t in techs]
    ids = [c.technician_id for c in rank_candidates(NEED, loads, {"A": grid("A")}, frozenset(), NOW)]
    assert ids == ["ok"]
    p1 = WorkNeed("A", "air_conditioner", "hardware_fault", "P1")
    ids = [c.technician_id for c in rank_candidates(p1, loads, {"A": grid("A")}, frozenset(), NOW)]
    assert ids == ["ok", "specialist"]
    escalation = WorkNeed("A", "air_conditioner", "hardware_fault", "P3", min_tier=2)
    ids = [c.technician_id for c in rank_candidates(escalation, loads, {"A": grid("A")}, frozenset(), NOW)]
    assert ids == ["specialist"]


def test_overflow_to_neighbours_and_surge_widens_and_raises_capacity() -> None:
    grids = {"A": grid("A", ["B"]), "B": grid("B", ["C"]), "C": grid("C")}
    techs = [
        tech("a1", "A", capacity=1),
        tech("b1", "B", capacity=1),
        tech("c1", "C", capacity=1),
        tech("a2", "A", tier=2, capacity=2),
    ]
    sim = Simulation(techs, grids)
    assert [sim.assign(NEED) for _ in range(3)] == ["a1", "b1", None]  # C is two hops away
    sim = Simulation(techs, grids, surge=frozenset({"A"}))
    got = [sim.assign(NEED) for _ in range(7)]
    # surge: a1 capacity 1 -> 1 (floor 1.5), tier 2 takes tier-1 work with capacity 3, then B, then C
    assert got == ["a1", "a2", "a2", "a2", "b1", "c1", None]
    loads = [TechnicianLoad(t, 0, None) for t in techs]
    vias = {c.technician_id: c.via for c in rank_candidates(NEED, loads, grids, frozenset({"A"}), NOW)}
    assert vias == {"a1": "direct", "a2": "surge", "b1": "overflow", "c1": "surge"}


def test_effective_capacity_and_backlog_switch() -> None:
    assert effective_capacity(4, grid("A", factor=1.5), True) == 6
    assert effective_capacity(4, grid("A", factor=1.5), False) == 4
    assert backlog_surge_change(surge_on=False, automatic=True, queued=6, threshold=5) is True
    assert backlog_surge_change(surge_on=False, automatic=True, queued=5, threshold=5) is None
    assert backlog_surge_change(surge_on=True, automatic=True, queued=3, threshold=5) is None
    assert backlog_surge_change(surge_on=True, automatic=True, queued=1, threshold=5) is False
    assert backlog_surge_change(surge_on=False, automatic=False, queued=60, threshold=5) is None
