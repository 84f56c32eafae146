"""The open-items index on the real MongoDB-wire server: marks keep the counts by state (findAndModify
by `_id`, then one `$inc`), concurrent marks of many items add up, and a heal stores what its walk found."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from harness import Infra, mongo, unique

from aftersales.shared.openindex import TOTALS, OpenIndex


async def test_counts_follow_concurrent_marks_and_a_heal_repairs_drift(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("open_")]
    index = OpenIndex(db, "visits")
    await asyncio.gather(*(index.mark(f"v{i}", "scheduled") for i in range(40)))
    await asyncio.gather(*(index.mark(f"v{i}", "due") for i in range(0, 40, 2)))
    await asyncio.gather(*(index.mark(f"v{i}", None) for i in range(0, 40, 4)))
    await asyncio.gather(*(index.mark(f"v{i}", None) for i in range(0, 40, 4)))  # redelivered
    assert await index.counts() == {"scheduled": 20, "due": 10}

    await db["open_visits_totals"].update_one({"_id": TOTALS}, {"$inc": {"n.due": 3}})  # a crash's drift
    await db["open_visits"].update_many({}, {"$set": {"at": datetime.now(UTC) - timedelta(hours=1)}})

    async def state_of(item: str) -> str | None:
        return "due" if int(item[1:]) % 2 == 0 else "scheduled"

    assert await index.heal(state_of) == 0
    assert await index.counts() == {"scheduled": 20, "due": 10}
    await client.drop_database(db.name)
    await client.close()
