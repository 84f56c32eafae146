"""The overdue counts are kept as deadlines open, move and close, and mature minute by minute: every
read and write is by `_id`, and the counts equal what a walk of the open deadlines finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.metrics.overdue_store import OverdueCounter
from aftersales.shared.mongo_in_memory import InMemoryMongo

NOW = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)


def deadline(kind: str, due_at: datetime) -> dict[str, Any]:
    return {"kind": kind, "item_id": "x", "due_at": due_at, "counted": True}


def walked(deadlines: dict[str, dict[str, Any]], now: datetime) -> dict[str, int]:
    """What counting by reading every open deadline finds (minute granularity, as the counter)."""
    minute = now.replace(second=0, microsecond=0)
    out = {"complaints": 0, "followups": 0}
    for d in deadlines.values():
        if d["due_at"].replace(second=0, microsecond=0) < minute:
            out["complaints" if d["kind"] == "complaint" else "followups"] += 1
    return out


async def test_counts_follow_deadlines_as_they_open_move_close_and_fall_due() -> None:
    db: Any = InMemoryMongo()["metrics"]
    counter = OverdueCounter(db, db["deadlines"])
    assert await counter.counts(NOW) == {"complaints": 0, "followups": 0}
    live: dict[str, dict[str, Any]] = {}

    async def write(key: str, doc: dict[str, Any] | None) -> None:
        before = live.pop(key, None)
        if doc is not None:
            live[key] = doc
        await counter.track(before, doc)

    await write("complaint:late", deadline("complaint", NOW - timedelta(hours=2)))  # already overdue
    await write("visit:soon", deadline("visit", NOW + timedelta(minutes=5)))
    await write("visit:later", deadline("visit", NOW + timedelta(minutes=30)))
    for minutes in (0, 4, 5, 6, 31, 45):
        at = NOW + timedelta(minutes=minutes)
        assert await counter.counts(at) == walked(live, at), f"+{minutes} min"
    at = NOW + timedelta(minutes=46)
    await write("visit:soon", deadline("visit", at + timedelta(days=1)))  # rescheduled: no longer overdue
    await write("complaint:late", None)  # closed after it matured: out of the total
    await write("visit:new", deadline("visit", at + timedelta(minutes=2)))  # opened, not due yet
    await write("visit:new", deadline("visit", at + timedelta(minutes=2)))  # a redelivered fold: no move
    for minutes in (0, 1, 2, 3, 60 * 3):
        later = at + timedelta(minutes=minutes)
        assert await counter.counts(later) == walked(live, later), f"+46+{minutes} min"
    assert await counter.counts(at + timedelta(minutes=60 * 3)) == {"complaints": 0, "followups": 2}


async def test_two_replicas_mature_each_minute_once() -> None:
    db: Any = InMemoryMongo()["metrics"]
    a, b = OverdueCounter(db, db["deadlines"]), OverdueCounter(db, db["deadlines"])
    await a.counts(NOW)
    for i in range(10):
        await (a if i % 2 else b).track(None, deadline("visit", NOW + timedelta(minutes=i)))
    for minutes in range(0, 12):
        at = NOW + timedelta(minutes=minutes)
        first, second = await a.counts(at), await b.counts(at)
        assert first == second == {"complaints": 0, "followups": min(max(minutes, 0), 10)}


async def test_deadlines_written_before_counts_were_kept_are_counted_once() -> None:
    db: Any = InMemoryMongo()["metrics"]
    legacy = {"kind": "complaint", "item_id": "k", "due_at": NOW - timedelta(days=3)}
    await db["deadlines"].insert_many(
        [
            {"_id": "complaint:k", **legacy},
            {"_id": "visit:v", **legacy, "kind": "visit", "due_at": NOW + timedelta(minutes=3)},
        ]
    )
    counter = OverdueCounter(db, db["deadlines"])
    assert await counter.counts(NOW) == {"complaints": 1, "followups": 0}
    assert await OverdueCounter(db, db["deadlines"]).counts(NOW) == {"complaints": 1, "followups": 0}
    assert await counter.counts(NOW + timedelta(minutes=4)) == {"complaints": 1, "followups": 1}
    # The legacy document now carries the mark, so closing it moves the count.
    before = await db["deadlines"].find_one_and_delete({"_id": "complaint:k"})
    await counter.track(before, None)
    assert await counter.counts(NOW + timedelta(minutes=4)) == {"complaints": 0, "followups": 1}


async def test_a_start_that_runs_again_leaves_the_minutes_after_the_totals_began_to_the_advance() -> None:
    db: Any = InMemoryMongo()["metrics"]
    first = OverdueCounter(db, db["deadlines"])
    await first.counts(NOW)
    await first.track(None, deadline("visit", NOW + timedelta(minutes=1)))
    # The first start's count of older deadlines failed midway (its marker never written): the next
    # process, a few minutes later, starts again; the bucket is after the totals began: not its to fold.
    await db["overdue_totals"].delete_one({"_id": "legacy"})
    assert await OverdueCounter(db, db["deadlines"]).counts(NOW + timedelta(minutes=5)) == {
        "complaints": 0,
        "followups": 1,
    }
