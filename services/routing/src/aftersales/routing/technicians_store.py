"""Technicians' presence in routing's MongoDB: their own status, their clients' heartbeats and the
silent-spell flags (each write by `_id`, its event in the same update)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Collection
from aftersales.shared.outbox import with_events

TECHNICIANS = "technicians"

Hint = Callable[[str, Any], None]


def no_hint(collection: str, doc_id: Any) -> None:
    return None


class TechnicianPresence:
    """Technicians' own status, their clients' heartbeats and the silent-spell flags (each write by
    `_id`, its event in the same update)."""

    technicians: Collection
    hint: Hint
    # the technicians as dispatch last read them (see `TechnicianSlots.technicians_in`), by id
    _technician_cache: tuple[float, dict[str, dict[str, Any]]] | None = None
    # technicians whose kept copy is known stale, each with its mark's number: read again by `_id`
    # before the copy is used; a mark stays until a read begun after it has been applied
    _stale_technicians: dict[str, int] | None = None
    _stale_marks: int = 0

    def forget_technicians(self, tech_id: str | None = None) -> None:
        """Drop the kept copy of one technician (a guarded write found it stale, or one may have landed
        unseen), or of all of them (None: one was created or reconfigured here)."""
        if tech_id is None:
            self._technician_cache = None
        else:
            if self._stale_technicians is None:
                self._stale_technicians = {}
            self._stale_marks += 1
            self._stale_technicians[tech_id] = self._stale_marks

    def _read_again(self, marks: dict[str, int]) -> None:
        """Drop the stale marks a read begun after them has now applied (not those set during it)."""
        stale = self._stale_technicians or {}
        for tech_id, mark in marks.items():
            if stale.get(tech_id) == mark:
                del stale[tech_id]

    def _kept(self, tech_id: str) -> dict[str, Any] | None:
        """The kept copy of one technician, if any (updated in place by this process's own writes)."""
        return self._technician_cache[1].get(tech_id) if self._technician_cache else None

    async def set_technician_status(
        self,
        tech_id: str,
        *,
        previous: str | None,
        status: str,
        now: datetime,
        events: Sequence[CloudEvent],
    ) -> bool:
        """Set a technician's own status if it is still `previous` (None: never set); True if it was."""
        guard = {"_id": tech_id, "status": previous if previous is not None else {"$exists": False}}
        update = {"$set": {"status": status, "status_changed_at": now}}
        return await self._update_technician(guard, update, events)

    async def record_heartbeat(self, tech_id: str, now: datetime) -> dict[str, Any] | None:
        """Note a heartbeat (ending a silent spell); return the technician as he was, or None."""
        before = await self.technicians.find_one({"_id": tech_id}, {"outbox": 0})
        if before is not None:
            update: dict[str, Any] = {"$set": {"last_heartbeat_at": now}}
            if "silent_since" in before:
                update["$unset"] = {"silent_since": ""}
            await self.technicians.update_one({"_id": tech_id}, update)
            kept = self._kept(tech_id)
            if kept is not None:  # a heartbeat makes him dispatchable again at once, here too
                kept["last_heartbeat_at"] = now
                kept.pop("silent_since", None)
        return before

    async def flag_silent(
        self, tech_id: str, *, last_heartbeat_at: datetime, now: datetime, events: Sequence[CloudEvent]
    ) -> bool:
        """Start a silent spell unless one is flagged already or a heartbeat came meanwhile."""
        guard = {"_id": tech_id, "last_heartbeat_at": last_heartbeat_at, "silent_since": {"$exists": False}}
        return await self._update_technician(guard, {"$set": {"silent_since": now}}, events)

    async def _update_technician(
        self, guard: Mapping[str, Any], update: Mapping[str, Any], events: Sequence[CloudEvent]
    ) -> bool:
        result = await self.technicians.update_one(guard, with_events(update, Topic.ASSIGNMENTS, events))
        self.forget_technicians(str(guard["_id"]))
        if result.modified_count == 1 and events:
            self.hint(TECHNICIANS, guard["_id"])
        return result.modified_count == 1
