"""The overdue gauges walk every open deadline, so the 10 s snapshot counts them afresh only every
`overdue_refresh_s` and exports the last count in between."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from aftersales.metrics import exporter
from aftersales.metrics.store import MetricsStore


class CountingStore:
    def __init__(self) -> None:
        self.walks = 0
        self.overdue_complaints = 1

    async def overdue(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        self.walks += 1
        return {"complaints": [{}] * self.overdue_complaints, "followups": [{}, {}]}


async def test_overdue_is_counted_afresh_only_every_refresh_period() -> None:
    store = CountingStore()
    every_5_min = exporter.OverdueCounts(cast(MetricsStore, store), 300.0)
    assert await every_5_min.get() == (1, 2)
    store.overdue_complaints = 5
    assert await every_5_min.get() == (1, 2)  # the last count, no walk
    assert store.walks == 1
    every_snapshot = exporter.OverdueCounts(cast(MetricsStore, store), 0.0)
    assert await every_snapshot.get() == (5, 2)
    assert await every_snapshot.get() == (5, 2)
    assert store.walks == 3
