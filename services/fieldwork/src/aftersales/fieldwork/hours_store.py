"""Fieldwork's MongoDB copies of routing's configuration: grids' business calendars and technicians'
shifts, each keyed by `_id` and replaced only by a higher version (redeliveries and overtaken events
change nothing). No events: these are copies, not decisions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from pymongo.errors import DuplicateKeyError

from aftersales.fieldwork.hours import GridHours, Shift, TechnicianShift
from aftersales.shared.calendar import BusinessCalendar, WorkingWindow
from aftersales.shared.contracts.desk import GridConfigured, TechnicianConfigured
from aftersales.shared.mongo import Collection
from aftersales.shared.runtime import ServiceRuntime

GRID_HOURS, TECHNICIAN_SHIFTS = "grid_hours", "technician_shifts"
SHIFT = TypeAdapter(dict[int, list[WorkingWindow]])


async def _keep_newest(collection: Collection, doc_id: str, version: int, fields: Mapping[str, Any]) -> bool:
    """Store a copy unless one of this version or newer is held; return True when stored."""
    update = {"$set": {**fields, "version": version, "updated_at": datetime.now(UTC)}}
    for _ in range(2):  # a concurrent first insert: the second try sees the document and compares
        try:
            result = await collection.update_one(
                {"_id": doc_id, "version": {"$lt": version}}, update, upsert=True
            )
        except DuplicateKeyError:
            continue  # held already: newer (nothing to do) or older (the next try replaces it)
        return result.modified_count == 1 or result.upserted_id is not None
    return False


class HoursStore:
    """Grids' calendars and technicians' shifts as routing last configured them."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.grids = runtime.db[GRID_HOURS]
        self.technicians = runtime.db[TECHNICIAN_SHIFTS]

    async def keep_grid(self, grid: GridConfigured) -> bool:
        fields = {"calendar": grid.calendar.model_dump(mode="json"), "occurred_at": grid.occurred_at}
        return await _keep_newest(self.grids, grid.grid_id, grid.version, fields)

    async def keep_technician(self, tech: TechnicianConfigured) -> bool:
        fields = {
            "grid_id": tech.grid_id,
            "shift": None if tech.shift is None else SHIFT.dump_python(tech.shift, mode="json"),
            "on_duty": tech.on_duty,
            "occurred_at": tech.occurred_at,
        }
        return await _keep_newest(self.technicians, tech.technician_id, tech.version, fields)

    async def grid(self, grid_id: str) -> GridHours | None:
        doc = await self.grids.find_one({"_id": grid_id})
        if doc is None:
            return None
        return GridHours(grid_id, BusinessCalendar.model_validate(doc["calendar"]), doc["version"])

    async def technician(self, technician_id: str) -> TechnicianShift | None:
        doc = await self.technicians.find_one({"_id": technician_id})
        if doc is None:
            return None
        shift: Shift | None = None if doc.get("shift") is None else SHIFT.validate_python(doc["shift"])
        return TechnicianShift(technician_id, doc["grid_id"], shift, doc["on_duty"], doc["version"])
