"""The grids as dispatch sees them: parsed once per change of a grid document, neighbourhood made
symmetric, with each grid's surge state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aftersales.routing.domain import ServiceGrid
from aftersales.routing.store import RoutingStore, grid_of
from aftersales.shared.calendar import BusinessCalendar, always_open


@dataclass(frozen=True, slots=True)
class GridView:
    grids: Mapping[str, ServiceGrid]
    surge: frozenset[str]
    surge_trigger: Mapping[str, str | None]

    def calendar_of(self, grid_id: str) -> BusinessCalendar:
        """Return a grid's calendar; an unknown (or unrouted) grid works around the clock."""
        grid = self.grids.get(grid_id)
        return grid.calendar if grid else always_open()


class GridDirectory:
    """Reads the grids through the store's short cache and keeps their parsed form per `updated_at`."""

    def __init__(self, store: RoutingStore) -> None:
        self.store = store
        self._parsed: dict[str, tuple[Any, ServiceGrid]] = {}

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
