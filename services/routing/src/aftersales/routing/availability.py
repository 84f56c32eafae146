"""Technicians' availability: the status a technician sets himself (available, busy, break, off), the
heartbeat of his mobile client, and the flag raised once per silent spell for the grid supervisor.
Dispatch reads both through `assignment.Presence`; what a silent technician holds stays with him
(flagged, not moved: the supervisor decides)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aftersales.routing import messages
from aftersales.routing.clocks import now_utc
from aftersales.routing.grids import GridDirectory
from aftersales.routing.metrics import SILENT_TECHNICIANS
from aftersales.routing.queues import Queues
from aftersales.routing.store import RoutingStore, presence_of, technician_of, ticket_of_slot
from aftersales.shared.contracts.desk import TechnicianStatus
from aftersales.shared.errors import Conflict, NotFound

log = logging.getLogger("aftersales.routing")
STATUS_ATTEMPTS = 3  # a status write that loses to another one re-reads and decides again


@dataclass(frozen=True, slots=True)
class Availability:
    """A technician's own status and heartbeat, and the silent-spell flags."""

    store: RoutingStore
    grids: GridDirectory
    queues: Queues
    silent_after_s: float

    async def set_status(self, tech_id: str, status: TechnicianStatus) -> dict[str, Any]:
        """Set a technician's own status (idempotent); back to available, his grid's queue drains."""
        for _ in range(STATUS_ATTEMPTS):
            doc = await self._technician(tech_id)
            previous = presence_of(doc).status
            if previous == status:
                return doc
            now = now_utc()
            evt = messages.technician_status_changed(
                tech_id, doc["grid_id"], status=status, previous=previous, now=now
            )
            if await self.store.set_technician_status(
                tech_id, previous=doc.get("status"), status=status.value, now=now, events=[evt]
            ):
                if status == TechnicianStatus.AVAILABLE:
                    await self.queues.capacity_freed(doc["grid_id"])
                return await self._technician(tech_id)
        raise Conflict(f"technician {tech_id}'s status keeps changing; try again")

    async def heartbeat(self, tech_id: str) -> dict[str, Any]:
        """Note that a technician's client is alive; a silent spell ends (his grid's queue drains)."""
        before = await self.store.record_heartbeat(tech_id, now_utc())
        if before is None:
            raise NotFound(f"technician {tech_id} not found", field="technician_id")
        if before.get("silent_since") is not None:
            log.info("technician heard again", extra={"technician_id": tech_id})
            await self.queues.capacity_freed(before["grid_id"])
        return await self._technician(tech_id)

    async def flag_silent(self) -> int:
        """Flag every technician silent longer than the limit, once per spell; return how many now.
        Technicians are a small, bounded collection: one read of them per housekeeping pass."""
        now = now_utc()
        view = await self.grids.view()
        flagged = 0
        for doc in await self.store.technician_docs():
            presence = presence_of(doc)
            last = presence.last_heartbeat_at
            if (
                last is None
                or doc.get("silent_since") is not None
                or not presence.silent(now, self.silent_after_s)
            ):
                continue
            if presence.status == TechnicianStatus.OFF or not technician_of(doc).on_duty:
                continue  # not working: his silence is no news
            grid = view.grids.get(doc["grid_id"])
            evt = messages.technician_silent(
                doc["_id"],
                doc["grid_id"],
                supervisor_id=grid.supervisor_id if grid else None,
                last_heartbeat_at=last,
                silent_after_s=self.silent_after_s,
                held_ticket_ids=[ticket_of_slot(key) for key in doc.get("active_ids", [])],
                now=now,
            )
            if await self.store.flag_silent(doc["_id"], last_heartbeat_at=last, now=now, events=[evt]):
                flagged += 1
                SILENT_TECHNICIANS.labels(doc["grid_id"]).inc()
                log.warning("technician silent", extra={"technician_id": doc["_id"], "grid": doc["grid_id"]})
        return flagged

    async def _technician(self, tech_id: str) -> dict[str, Any]:
        doc = await self.store.technician_doc(tech_id)
        if doc is None:
            raise NotFound(f"technician {tech_id} not found", field="technician_id")
        return doc
