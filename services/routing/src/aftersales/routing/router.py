"""Dispatch: turn a ticket round into a work order with a technician (or a place in the queue), drain
queues when capacity frees, switch surge by backlog, and escalate. Orchestrates the pure rules of
assignment/sla/domain over the store; every state change is one conditional write with its events."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from aftersales.routing.assignment import (
    Candidate,
    Via,
    WorkNeed,
    backlog_surge_change,
    effective_capacity,
    grid_rings,
    need_of,
    rank_candidates,
)
from aftersales.routing.calendar import BusinessCalendar, always_open
from aftersales.routing.clocks import CLOCKS, arm_earliest, now_utc, plan_state
from aftersales.routing.domain import HOLDING_STATUSES, ServiceGrid, Status, match_grid
from aftersales.routing.store import RoutingStore, grid_of, load_of, slot_key, technician_of
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.events import (
    SurgeSwitchedOff,
    SurgeSwitchedOn,
    WorkOrderAssigned,
    WorkOrderQueued,
)
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.runtime import ServiceRuntime

log = logging.getLogger("aftersales.routing")
SOURCE = "/aftersales/routing"
UNROUTED = "unrouted"
PRIORITY_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}

ASSIGNMENT_LATENCY = Histogram(
    "aftersales_assignment_latency_seconds",
    "From the start of a ticket round to its assignment",
    ["via"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
QUEUE_LENGTH = Gauge("aftersales_queue_length", "Work orders waiting for capacity", ["grid"])
GRID_LOAD = Gauge(
    "aftersales_grid_load_ratio", "Active work orders / capacity of on-duty technicians", ["grid"]
)
SLA_WARNINGS = Counter("aftersales_sla_warnings_total", "SLA warnings fired", ["clock", "grid"])
SLA_BREACHES = Counter("aftersales_sla_breaches_total", "SLA breaches", ["clock", "grid"])
ESCALATIONS = Counter("aftersales_escalations_total", "Work-order escalations", ["level", "reason"])
WORK_ORDERS = Counter("aftersales_work_orders_total", "Dispatch outcomes", ["outcome"])
SLOTS_REAPED = Counter(
    "aftersales_slots_reaped_total", "Capacity slots released because no open work order held them"
)


@dataclass(frozen=True, slots=True)
class GridView:
    grids: Mapping[str, ServiceGrid]
    surge: frozenset[str]
    surge_trigger: Mapping[str, str | None]


def event(data: Any, subject: str) -> CloudEvent:
    return new_event(data, source=SOURCE, subject=subject)


class Router:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.store = RoutingStore(runtime.db, runtime.relay.notify)
        self._parsed: dict[str, tuple[Any, ServiceGrid]] = {}

    # ------------------------------------------------------------------ grids view

    async def view(self, *, fresh: bool = False) -> GridView:
        docs = await self.store.grid_docs(fresh=fresh)
        grids: dict[str, ServiceGrid] = {}
        for gid, doc in docs.items():
            cached = self._parsed.get(gid)
            if cached is None or cached[0] != doc.get("updated_at"):
                cached = (doc.get("updated_at"), grid_of(doc))
                self._parsed[gid] = cached
            grids[gid] = cached[1]
        # Neighbourhood is symmetric: a grid listing another makes both neighbours.
        for gid, grid in list(grids.items()):
            for n in grid.neighbours:
                other = grids.get(n)
                if other is not None and gid not in other.neighbours:
                    grids[n] = other.model_copy(update={"neighbours": [*other.neighbours, gid]})
        surge = frozenset(g for g, d in docs.items() if d.get("surge_on"))
        return GridView(grids, surge, {g: d.get("surge_trigger") for g, d in docs.items()})

    def calendar_of(self, view: GridView, grid_id: str) -> BusinessCalendar:
        grid = view.grids.get(grid_id)
        return grid.calendar if grid else always_open()

    # ------------------------------------------------------------------ dispatch of a new round

    async def dispatch_round(
        self,
        *,
        facts: Mapping[str, Any],
        started_at: datetime,
        round_: int,
        previous_technician_id: str | None,
    ) -> None:
        """Create the work order of a ticket's round, assigned or queued; idempotent per round."""
        ticket_id = str(facts["ticket_id"])
        # Round 1 goes straight to an insert (a duplicate key tells a redelivery); reopens read first.
        existing = await self.store.work_order(ticket_id) if round_ > 1 else None
        if existing is not None and existing["round"] >= round_:
            return  # this round was dispatched already (redelivery)
        view = await self.view()
        grid = match_grid(view.grids.values(), facts["region_code"], facts["device_type"])
        grid_id = grid.id if grid else UNROUTED
        calendar = self.calendar_of(view, grid_id)
        policy = await self.store.cached_policy()
        priority, tier = Priority(facts["priority"]), CustomerTier(facts.get("customer_tier", "standard"))
        sla = {
            clock.value: plan_state(
                started_at=started_at,
                target_minutes=policy.minutes(clock, priority, tier),
                calendar=calendar,
                pauses=[],
                fired_pct=[],
                generation=0,
            )
            for clock in CLOCKS
        }
        await arm_earliest(self.runtime.timers, ticket_id=ticket_id, round_=round_, states=sla)
        now = now_utc()
        key = slot_key(ticket_id, round_)
        need = WorkNeed(grid_id, facts["device_type"], facts["category"], facts["priority"])
        chosen = (
            await self._reserve(view, need, key, previous_technician_id, reuse_held=True) if grid else None
        )
        base: dict[str, Any] = {
            "round": round_,
            "grid_id": grid_id,
            "facts": dict(facts),
            "priority_rank": PRIORITY_RANK[facts["priority"]],
            "started_at": started_at,
            "updated_at": now,
            "sla": sla,
            "pauses": [],
            "paused_since": None,
            "exclude": [],
            "escalation_level": None,
            "previous_technician_id": previous_technician_id,
            "resolution_code": None,
        }
        events: list[CloudEvent]
        if chosen is not None:
            candidate, via = chosen
            base.update(self._holder_fields(candidate, via, now))
            events = [self._assigned_event(ticket_id, base, candidate, via, now)]
        else:
            reason = (
                "no capacity in the grid or its neighbours"
                if grid
                else f"no grid covers region {facts['region_code']} for device type {facts['device_type']}"
            )
            base.update({"status": Status.QUEUED.value, "technician_id": None, "queued_at": now, "via": None})
            events = [
                event(
                    WorkOrderQueued(
                        ticket_id=ticket_id,
                        grid_id=grid_id,
                        round=round_,
                        occurred_at=now,
                        reason=reason,
                        priority=facts["priority"],
                        category=facts["category"],
                    ),
                    ticket_id,
                )
            ]
        if chosen is None:  # queue entry first: a crash leaves at most a stale entry, which drains drop
            await self.store.enqueue({"_id": ticket_id, **base})
        if existing is None:
            written = await self.store.insert_work_order({"_id": ticket_id, **base}, events)
        else:
            await self._release_holder(existing)
            written = await self.store.update_work_order(
                ticket_id, {"round": existing["round"]}, {"$set": base}, events
            )
        if not written:
            # Dispatched before (a redelivery, or another replica meanwhile): give back a slot we took now.
            if chosen is not None and not chosen[0].reused:
                await self.store.release(chosen[0].technician_id, key)
            return
        if chosen is not None:
            if existing is not None and existing["status"] == Status.QUEUED:
                await self.store.dequeue(ticket_id)
            self._observe_assignment(chosen[1], started_at, now)
        else:
            WORK_ORDERS.labels("queued").inc()
            if grid is not None:
                await self.after_queued(grid_id)

    async def _reserve(
        self,
        view: GridView,
        need: WorkNeed,
        key: str,
        previous_technician_id: str | None = None,
        *,
        reuse_held: bool = False,
        home_only: bool = False,
    ) -> tuple[Candidate, Via] | None:
        """Take a slot for the work: a slot already held for it (a crash between reserve and write), the
        previous technician, or the best candidate whose conditional update wins."""
        rings = grid_rings(need.grid_id, view.grids, need.grid_id in view.surge)
        grid_ids = [need.grid_id] if home_only else [g for ring in rings for g in ring]
        docs = await self.store.technicians_in(grid_ids)
        if reuse_held:
            for doc in docs:
                if key in doc.get("active_ids", []):
                    tech = technician_of(doc)
                    held = Candidate(
                        tech.id, tech.grid_id, tech.tier, tech.team_id, tech.capacity, 0, "direct", True
                    )
                    return held, "direct"
        now = now_utc()
        if previous_technician_id:
            previous = await self.store.technician_doc(previous_technician_id)
            if previous is not None:
                tech = technician_of(previous)
                grid = view.grids.get(tech.grid_id)
                cap = effective_capacity(tech.capacity, grid, tech.grid_id in view.surge)
                timezone = grid.calendar.timezone if grid else "UTC"
                if tech.on_shift(now, timezone) and await self.store.reserve(tech.id, key, cap):
                    cand = Candidate(
                        tech.id, tech.grid_id, tech.tier, tech.team_id, cap, 0, "previous_technician"
                    )
                    return cand, "previous_technician"
        loads = [load_of(d) for d in docs]
        for candidate in rank_candidates(need, loads, view.grids, view.surge, now):
            if await self.store.reserve(candidate.technician_id, key, candidate.effective_capacity):
                return candidate, candidate.via
        return None

    @staticmethod
    def _holder_fields(candidate: Candidate, via: Via, now: datetime) -> dict[str, Any]:
        return {
            "status": Status.ASSIGNED.value,
            "technician_id": candidate.technician_id,
            "technician_grid_id": candidate.grid_id,
            "tier": candidate.tier,
            "team_id": candidate.team_id,
            "via": via,
            "assigned_at": now,
            "queued_at": None,
        }

    @staticmethod
    def _assigned_event(
        ticket_id: str, wo: Mapping[str, Any], candidate: Candidate, via: Via, now: datetime
    ) -> CloudEvent:
        facts = wo["facts"]
        return event(
            WorkOrderAssigned(
                ticket_id=ticket_id,
                grid_id=wo["grid_id"],
                round=wo["round"],
                occurred_at=now,
                technician_id=candidate.technician_id,
                team_id=candidate.team_id,
                tier=candidate.tier,
                via=via,
                priority=facts["priority"],
                category=facts["category"],
                first_response_due=wo["sla"]["first_response"]["due_at"],
                resolution_due=wo["sla"]["resolution"]["due_at"],
            ),
            ticket_id,
        )

    @staticmethod
    def _observe_assignment(via: str, started_at: datetime, now: datetime) -> None:
        WORK_ORDERS.labels("assigned").inc()
        ASSIGNMENT_LATENCY.labels(via).observe(max((now - started_at).total_seconds(), 0.0))

    async def _release_holder(self, wo: Mapping[str, Any]) -> str | None:
        """Release the slot a work order's round holds, if any; return the technician's grid."""
        tech_id = wo.get("technician_id")
        holding = wo.get("status") in {s.value for s in Status if s != Status.QUEUED}
        if tech_id and holding and await self.store.release(tech_id, slot_key(wo["_id"], wo["round"])):
            return str(wo.get("technician_grid_id") or wo.get("grid_id"))
        return None

    # ------------------------------------------------------------------ capacity freed: drain queues

    async def capacity_freed(self, tech_grid_id: str | None) -> None:
        """Drain the queues a technician of `tech_grid_id` can serve: his grid, then its neighbours."""
        if not tech_grid_id:
            return
        view = await self.view()
        rings = grid_rings(tech_grid_id, view.grids, tech_grid_id in view.surge)
        for gid in [g for ring in rings[:2] for g in ring]:
            await self.drain(gid, view)

    async def drain(self, grid_id: str, view: GridView | None = None, *, limit: int = 25) -> int:
        """Assign queued work orders of a grid by priority then age while someone has capacity."""
        view = view or await self.view()
        assigned = misses = 0
        for wo in await self.store.queued(grid_id, limit):
            need = need_of(wo, exclude=wo.get("exclude", []))
            key = slot_key(wo["_id"], wo["round"])
            chosen = await self._reserve(view, need, key)
            if chosen is None:
                misses += 1
                if misses >= 3:
                    break
                continue
            candidate = chosen[0]
            now = now_utc()
            queued_via: Via = "queue"
            update = self._holder_fields(candidate, queued_via, now)
            update["updated_at"] = now
            evt = self._assigned_event(wo["_id"], wo, candidate, queued_via, now)
            ok = await self.store.update_work_order(
                wo["_id"], {"status": Status.QUEUED.value, "round": wo["round"]}, {"$set": update}, [evt]
            )
            if not ok:
                await self.store.release(candidate.technician_id, key)
                continue
            await self.store.dequeue(wo["_id"])
            assigned += 1
            self._observe_assignment(queued_via, wo["started_at"], now)
        await self.check_surge(grid_id, view)
        return assigned

    async def after_queued(self, grid_id: str) -> None:
        """A work order was queued: switch surge on if the backlog passed the threshold, and drain once
        (capacity may have freed between our look and our write)."""
        view = await self.view()
        if await self.check_surge(grid_id, view):
            view = await self.view(fresh=True)
        await self.drain(grid_id, view, limit=5)

    async def check_surge(self, grid_id: str, view: GridView) -> bool:
        """Switch surge on or off by the backlog (automatic grids only); return True if it changed."""
        grid = view.grids.get(grid_id)
        if grid is None:
            return False
        surge_on = grid_id in view.surge
        automatic = grid.surge.automatic and view.surge_trigger.get(grid_id) != "supervisor"
        queued = await self.store.queue_length(grid_id)
        QUEUE_LENGTH.labels(grid_id).set(queued)
        change = backlog_surge_change(
            surge_on=surge_on, automatic=automatic, queued=queued, threshold=grid.surge.backlog_threshold
        )
        if change is None:
            return False
        return await self.switch_surge(grid_id, on=change, trigger="backlog", backlog=queued)

    async def switch_surge(self, grid_id: str, *, on: bool, trigger: str, backlog: int) -> bool:
        now = now_utc()
        data: SurgeSwitchedOn | SurgeSwitchedOff
        if on:
            data = SurgeSwitchedOn(grid_id=grid_id, trigger=trigger, backlog=backlog, occurred_at=now)  # type: ignore[arg-type]
        else:
            data = SurgeSwitchedOff(grid_id=grid_id, trigger=trigger, backlog=backlog, occurred_at=now)  # type: ignore[arg-type]
        changed = await self.store.set_surge(grid_id, on=on, trigger=trigger, events=[event(data, grid_id)])
        if changed:
            log.info("surge switched", extra={"grid": grid_id, "on": on, "trigger": trigger})
            if on:
                await self.drain(grid_id, await self.view(fresh=True))
        return changed

    # ------------------------------------------------------------------ gauges

    async def refresh_gauges(self) -> None:
        view = await self.view()
        lengths = await self.store.queue_lengths()
        for gid in view.grids:
            QUEUE_LENGTH.labels(gid).set(lengths.get(gid, 0))
        totals: dict[str, list[int]] = {}
        for doc in await self.store.technician_docs():
            if not doc.get("on_duty", True):
                continue
            cap = effective_capacity(
                int(doc.get("capacity", 0)), view.grids.get(doc["grid_id"]), doc["grid_id"] in view.surge
            )
            t = totals.setdefault(doc["grid_id"], [0, 0])
            t[0] += int(doc.get("active_work_orders", 0))
            t[1] += cap
        for gid, (active, cap) in totals.items():
            GRID_LOAD.labels(gid).set(active / cap if cap else 0.0)

    async def reap_slots(self, *, grace_s: float = 60.0) -> int:
        """Release slots that no open work order holds (a crash between taking a slot and writing the
        work order, or between a hand-over's writes); return how many. Slots younger than `grace_s`
        are left alone: their dispatch may still be writing. Bounded by the open work, by `_id`."""
        released = 0
        freed: set[str] = set()
        for tech_id, key in await self.store.held_slots(now_utc() - timedelta(seconds=grace_s)):
            ticket_id, _, round_ = key.rpartition("#")
            wo = await self.store.work_order(ticket_id)
            holds = (
                wo is not None
                and str(wo.get("round")) == round_
                and wo.get("technician_id") == tech_id
                and wo.get("status") in {s.value for s in HOLDING_STATUSES}
            )
            if not holds and await self.store.release(tech_id, key):
                released += 1
                SLOTS_REAPED.inc()
                log.warning(
                    "released a slot no work order holds", extra={"ticket_id": ticket_id, "slot": key}
                )
                if wo is not None:
                    freed.add(str(wo.get("grid_id")))
        for grid_id in freed:
            await self.capacity_freed(grid_id)
        return released

    async def sweep_queues(self) -> None:
        """Safety net: drain every grid's queue (a release may have raced a queueing elsewhere)."""
        view = await self.view()
        for gid, n in (await self.store.queue_lengths()).items():
            if n and gid in view.grids:
                await self.drain(gid, view)
