"""Metrics' overdue counts on the real MongoDB-wire server: a deadline moved or closed after its minute
matured moves the total (the bucket's conditional upsert is refused with a duplicate key), and two
replicas counting at once mature each minute once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from harness import Infra, mongo, unique

from aftersales.metrics.overdue_store import OverdueCounter


def deadline(kind: str, due_at: datetime) -> dict[str, Any]:
    return {"kind": kind, "item_id": "x", "due_at": due_at, "counted": True}


async def test_overdue_counts_on_the_real_server(infra: Infra) -> None:
    client = mongo(infra)
    db = client[unique("overdue_")]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    a, b = OverdueCounter(db, db["deadlines"]), OverdueCounter(db, db["deadlines"])
    assert await a.counts(now) == {"complaints": 0, "followups": 0}
    visits = [deadline("visit", now + timedelta(minutes=i % 5, seconds=30)) for i in range(20)]
    complaint = deadline("complaint", now + timedelta(minutes=1))
    await asyncio.gather(*(a.track(None, v) for v in visits), b.track(None, complaint))

    at = now + timedelta(minutes=3)
    counted = await asyncio.gather(a.counts(at), b.counts(at))  # both replicas advance at once
    assert counted[0] == counted[1] == {"complaints": 1, "followups": 12}  # minutes 0, 1, 2 matured
    # Closed after its minute matured: out of the total; a visit moved from a matured minute to one
    # not yet due, and one moved from a minute not yet due to a matured one.
    await b.track(complaint, None)
    await a.track(visits[0], deadline("visit", now + timedelta(days=1)))
    await a.track(visits[4], deadline("visit", now - timedelta(hours=1)))
    assert await a.counts(at) == {"complaints": 0, "followups": 12}
    assert await b.counts(now + timedelta(minutes=6)) == {"complaints": 0, "followups": 19}
    totals = {d["_id"]: d async for d in db["overdue_totals"].find({})}
    assert totals["followups"]["through"] == now + timedelta(minutes=6)
    await client.drop_database(db.name)
    await client.close()
