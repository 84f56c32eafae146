"""Technicians' capacity: take a slot for a work order's round (atomically, in the store), give it back,
and reconcile slots that no open work order holds any more (a crash between two writes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from aftersales.routing.store import (
    RoutingStore,
    load_of,
    presence_of,
    slot_key,
    technician_of,
    ticket_of_slot,
)
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
        audit: SlotAudit,
        *,
        grace_s: float,
        check: Callable[[WorkOrder], Awaitable[object]] | None = None,
    ) -> ReapedSlots:
        """Release slots that no open work order holds (a crash between taking a slot and writing the
        work order, or between a hand-over's writes). `audit` says which held slots to check; one seen
        held by no work order is released once it has been so for `grace_s` (its dispatch may still be
        writing when first seen). One work order read by `_id` per slot checked; `check` is given each
        work order that does hold its slot (its timers)."""
        reaped = ReapedSlots()
        held = await self.store.held_slots()
        for tech_id, key in audit.to_check(held):
            ticket_id, _, round_ = key.rpartition("#")
            wo = await self.store.load_work_order(ticket_id)
            holds = (
                wo is not None and str(wo.round) == round_ and wo.technician_id == tech_id and wo.holds_slot
            )
            if holds:
                audit.holds((tech_id, key))
                if wo is not None and check is not None:
                    await check(wo)
                continue
            if not audit.orphaned((tech_id, key), grace_s):
                continue
            if await self.store.release(tech_id, key):
                reaped.released += 1
                SLOTS_REAPED.inc()
                extra = {"ticket_id": ticket_id, "slot": key}
                log.warning("released a slot no work order holds", extra=extra)
                if wo is not None:
                    reaped.grids.add(wo.grid_id)
        audit.seen(held)
        return reaped


HANDLER_FAILURE = "handler failure"
PASS_BROKEN = "a reconciliation that did not finish"
_OWN_FAILURES = frozenset({HANDLER_FAILURE, PASS_BROKEN})


Slot = tuple[str, str]  # (technician, slot key)


@dataclass(slots=True)
class SlotAudit:
    """Which held slots the next reconciliation checks: on evidence, not the whole open work each time.

    A slot is left held by no open work order only when something stopped between two writes: a
    process died (its successor starts with a full check, and its peers learn it from the outbox
    relay's heartbeat: `request_full`), a write went unconfirmed (the same heartbeat), or a handler of
    this process failed (`shared.failures`: the slots of the tickets it named, or every slot when it
    named none). Without such evidence a pass checks only the slots held now that the last pass did
    not see, so the cost follows the new work and the failures, not the held slots. A slot seen held
    by no work order is checked again at every pass, and released once it has been so for the grace
    (a dispatch still writing its work order is not a leak); how long is kept here, in memory, rather
    than as a time per slot in the technician's document, which every slot would grow."""

    full_reason: str | None = "start-up"
    # Armed SLA timers are checked on the full passes a process ending asks for (start-up, a relay gone,
    # a write unconfirmed), until one finishes; not on new slots, a failed handler or a broken pass
    # (a timer is lost only by something stopping between writes, and those passes read every slot).
    check_timers: bool = True
    failures_seen: int = 0
    suspects: set[str] = field(default_factory=set)  # tickets (or technicians) of failed handlers
    known: set[Slot] | None = None  # the slots the last finished pass saw held (None: none finished)
    orphans: dict[Slot, float] = field(default_factory=dict)  # seen held by no work order: since when
    full: bool = False  # this pass checks every held slot

    def request_full(self, reason: str) -> None:
        """Check every held slot at the next pass (another process gone, or a write unconfirmed)."""
        self.full_reason = self.full_reason or reason
        if reason not in _OWN_FAILURES:
            self.check_timers = True

    def begin(self) -> bool:
        """Start a pass; return whether it checks every held slot."""
        self.failures_seen, named = failed_since(self.failures_seen)
        if named is None:
            self.request_full(HANDLER_FAILURE)
        else:
            self.suspects |= named
        self.full = self.full_reason is not None or self.known is None
        if self.full_reason is not None:
            log.info("checking every held slot", extra={"reason": self.full_reason})
        self.full_reason = None
        return self.full

    def to_check(self, held: Sequence[Slot]) -> list[Slot]:
        """The held slots this pass reads the work orders of: all of them on a full pass, else the new
        ones, the ones seen orphaned before, and those of the suspects."""
        if self.full or self.known is None:
            return list(held)
        suspects, known, orphans = self.suspects, self.known, self.orphans
        return [
            s
            for s in held
            if s not in known or s in orphans or s[0] in suspects or ticket_of_slot(s[1]) in suspects
        ]

    def orphaned(self, slot: Slot, grace_s: float) -> bool:
        """Note a slot seen held by no work order; True once it has been so for `grace_s`."""
        first = self.orphans.setdefault(slot, time.monotonic())
        return time.monotonic() - first >= grace_s

    def seen(self, held: Sequence[Slot]) -> None:
        """The pass finished on these held slots (orphans no longer held are forgotten)."""
        now_held = set(held)
        self.orphans = {s: t for s, t in self.orphans.items() if s in now_held}
        self.known = now_held

    def holds(self, slot: Slot) -> None:
        """A slot checked is held by its work order: no orphan (a dispatch that was still writing)."""
        self.orphans.pop(slot, None)

    def done(self) -> None:
        if self.full:
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
