"""Technicians' capacity: take a slot for a work order's round (atomically, in the store), give it back,
and reconcile slots that no open work order holds any more (a crash between two writes)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aftersales.routing.assignment import (
    DEFAULT_SILENT_AFTER_S,
    Candidate,
    Via,
    WorkNeed,
    effective_capacity,
    grid_rings,
    rank_candidates,
)
from aftersales.routing.clocks import now_utc
from aftersales.routing.domain import Status, WorkOrder
from aftersales.routing.grids import GridView
from aftersales.routing.metrics import SLOTS_REAPED
from aftersales.routing.store import RoutingStore, load_of, presence_of, slot_key, technician_of
from aftersales.shared.failures import failed_since

log = logging.getLogger("aftersales.routing")


@dataclass(slots=True)
class ReapedSlots:
    """What a reconciliation released: how many slots, and the grids whose queues may now drain."""

    released: int = 0
    grids: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Capacity:
    """Technicians' slots: reserve for a work order's round, release, reconcile."""

    store: RoutingStore
    silent_after_s: float = DEFAULT_SILENT_AFTER_S  # no new work for a client silent longer than this

    async def reserve(
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
            held = _held(docs, key)
            if held is not None:
                return held, "direct"
        now = now_utc()
        if previous_technician_id:
            previous = await self._previous(view, previous_technician_id, key, now)
            if previous is not None:
                return previous, "previous_technician"
        loads = [load_of(d) for d in docs]
        ranked = rank_candidates(need, loads, view.grids, view.surge, now, silent_after_s=self.silent_after_s)
        for candidate in ranked:
            if await self.store.reserve(candidate.technician_id, key, candidate.effective_capacity):
                return candidate, candidate.via
        return None

    async def _previous(self, view: GridView, tech_id: str, key: str, now: datetime) -> Candidate | None:
        """Take a slot of the round's previous technician if he is on shift, available and has room."""
        doc = await self.store.technician_doc(tech_id)
        if doc is None or not presence_of(doc).dispatchable(now, self.silent_after_s):
            return None
        tech = technician_of(doc)
        grid = view.grids.get(tech.grid_id)
        cap = effective_capacity(tech.capacity, grid, tech.grid_id in view.surge)
        timezone = grid.calendar.timezone if grid else "UTC"
        if tech.on_shift(now, timezone) and await self.store.reserve(tech.id, key, cap):
            return Candidate(tech.id, tech.grid_id, tech.tier, tech.team_id, cap, 0, "previous_technician")
        return None

    async def release(self, tech_id: str, key: str) -> bool:
        """Give back a slot taken for a write that did not land; True if it was held (idempotent)."""
        return await self.store.release(tech_id, key)

    async def release_holder(self, wo: WorkOrder) -> str | None:
        """Release the slot a work order's round holds, if any; return the technician's grid."""
        holding = wo.status != Status.QUEUED
        if (
            wo.technician_id
            and holding
            and await self.store.release(wo.technician_id, slot_key(wo.ticket_id, wo.round))
        ):
            return str(wo.technician_grid_id or wo.grid_id)
        return None

    async def reap_slots(
        self,
        *,
        older_than: datetime,
        since: datetime | None = None,
        suspects: Set[str] = frozenset(),
        check: Callable[[WorkOrder], Awaitable[object]] | None = None,
    ) -> ReapedSlots:
        """Release slots that no open work order holds (a crash between taking a slot and writing the
        work order, or between a hand-over's writes). Slots taken from `older_than` on are left alone:
        their dispatch may still be writing; with `since`, so are slots taken before it (checked
        already) unless their ticket or technician is one of `suspects`. One work order read by `_id`
        per slot checked; `check` is given each work order that does hold its slot (its timers)."""
        reaped = ReapedSlots()
        for tech_id, key in await self.store.held_slots(older_than, since=since, suspects=suspects):
            ticket_id, _, round_ = key.rpartition("#")
            wo = await self.store.load_work_order(ticket_id)
            holds = (
                wo is not None and str(wo.round) == round_ and wo.technician_id == tech_id and wo.holds_slot
            )
            if holds and wo is not None and check is not None:
                await check(wo)
            if not holds and await self.store.release(tech_id, key):
                reaped.released += 1
                SLOTS_REAPED.inc()
                log.warning(
                    "released a slot no work order holds", extra={"ticket_id": ticket_id, "slot": key}
                )
                if wo is not None:
                    reaped.grids.add(wo.grid_id)
        return reaped


HANDLER_FAILURE = "handler failure"
PASS_BROKEN = "a reconciliation that did not finish"
_OWN_FAILURES = frozenset({HANDLER_FAILURE, PASS_BROKEN})


@dataclass(slots=True)
class SlotAudit:
    """Which held slots the next reconciliation checks: on evidence, not the whole open work each time.

    A slot is left held by no open work order only when something stopped between two writes: a
    process died (its successor starts with a full check, and its peers learn it from the outbox
    relay's heartbeat: `request_full`), a write went unconfirmed (the same heartbeat), or a handler of
    this process failed (`shared.failures`: the slots of the tickets it named, or every slot when it
    named none). Without such evidence a pass checks only the slots taken since the last pass (each
    once, after its grace), so the cost follows the new work and the failures, not the held slots."""

    full_reason: str | None = "start-up"
    # Armed SLA timers are checked on the full passes a process ending asks for (start-up, a relay gone,
    # a write unconfirmed), until one finishes; not on new slots, a failed handler or a broken pass
    # (a timer is lost only by something stopping between writes, and those passes read every slot).
    check_timers: bool = True
    checked_until: datetime | None = None  # slots taken before this were checked
    failures_seen: int = 0
    suspects: set[str] = field(default_factory=set)  # tickets (or technicians) of failed handlers

    def request_full(self, reason: str) -> None:
        """Check every held slot at the next pass (another process gone, or a write unconfirmed)."""
        self.full_reason = self.full_reason or reason
        if reason not in _OWN_FAILURES:
            self.check_timers = True

    def begin(self) -> tuple[datetime | None, frozenset[str]]:
        """Start a pass: return where its slots start (None: all of them) and the suspects to check
        whenever their slots were taken."""
        self.failures_seen, named = failed_since(self.failures_seen)
        if named is None:
            self.request_full(HANDLER_FAILURE)
        else:
            self.suspects |= named
        if self.full_reason is not None or self.checked_until is None:
            if self.full_reason is not None:
                log.info("checking every held slot", extra={"reason": self.full_reason})
            self.full_reason = None
            return None, frozenset()
        return self.checked_until, frozenset(self.suspects)

    def done(self, cutoff: datetime, *, full: bool) -> None:
        self.checked_until = cutoff
        if full:
            self.check_timers = False
        self.suspects.clear()

    def failed(self) -> None:
        self.request_full(PASS_BROKEN)


def _held(docs: Sequence[Mapping[str, Any]], key: str) -> Candidate | None:
    """Return the technician already holding the slot `key`, if any (a crash after the reserve)."""
    for doc in docs:
        if key in doc.get("active_ids", []):
            tech = technician_of(doc)
            return Candidate(tech.id, tech.grid_id, tech.tier, tech.team_id, tech.capacity, 0, "direct", True)
    return None
