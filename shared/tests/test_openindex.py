"""The open-items index keeps its counts by state as items are marked, so a gauge reads one document
however much is open; a heal corrects entries a crash left wrong, reads only what was marked since the
last heal, and stores the counts its walk found unless a mark raced it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aftersales.shared.mongo import Database
from aftersales.shared.openindex import TOTALS, OpenIndex
from aftersales.shared.testing import InMemoryMongo


def database() -> Database:
    return cast(Database, InMemoryMongo()["test"])


async def test_marks_move_the_counts_and_a_repeated_mark_changes_nothing() -> None:
    index = OpenIndex(database(), "visits")
    assert await index.counts() == {}
    await index.mark("v1", "scheduled")
    await index.mark("v2", "scheduled")
    await index.mark("v1", "due")
    await index.mark("v1", "due")  # a redelivery
    assert await index.counts() == {"scheduled": 1, "due": 1}
    await index.mark("v1", None)
    await index.mark("v1", None)
    await index.mark("gone", None)  # never open
    assert await index.counts() == {"scheduled": 1}


async def test_counts_are_read_from_the_totals_not_by_walking_the_entries() -> None:
    db = database()
    index = OpenIndex(db, "visits")
    await index.mark("v1", "due")
    assert await index.counts() == {"due": 1}  # first count of an index: a walk, stored exact
    # an entry written behind the index's back is not counted: counts come from the totals document
    await db["open_visits"].insert_one({"_id": "v9", "state": "due", "at": datetime.now(UTC)})
    assert await index.counts() == {"due": 1}
    await index.mark("v2", "due")
    assert await index.counts() == {"due": 2}


async def test_an_index_kept_before_its_counts_is_counted_once_by_a_walk() -> None:
    db = database()
    old = datetime.now(UTC) - timedelta(hours=1)
    await db["open_visits"].insert_many(
        [{"_id": f"v{i}", "state": "scheduled" if i % 3 else "due", "at": old} for i in range(9)]
    )
    index = OpenIndex(db, "visits")
    assert await index.counts() == {"due": 3, "scheduled": 6}
    totals = await db["open_visits_totals"].find_one({"_id": TOTALS})
    assert totals is not None and totals["exact"] is True


async def test_heal_corrects_a_wrong_entry_and_then_reads_only_what_was_marked_since() -> None:
    db = database()
    index = OpenIndex(db, "visits")
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    truth: dict[str, str | None] = {"v1": "due", "v2": None, "v3": "scheduled"}
    for item, state in (("v1", "due"), ("v2", "due"), ("v3", "scheduled")):
        await index.mark(item, state)
    # v2's own write was lost after its mark (a crash): the entry says "due", the visit is closed
    await db["open_visits"].update_many({}, {"$set": {"at": long_ago}})
    asked: list[str] = []

    async def state_of(item: str) -> str | None:
        asked.append(item)
        return truth[item]

    assert await index.heal(state_of) == 1
    assert sorted(asked) == ["v1", "v2", "v3"]
    assert await index.counts() == {"due": 1, "scheduled": 1}

    asked.clear()
    assert await index.heal(state_of) == 0
    assert asked == []  # nothing marked since the last heal: no item is read again


async def test_heal_stores_the_counts_its_walk_found_when_no_mark_raced_it() -> None:
    db = database()
    index = OpenIndex(db, "visits")
    await index.mark("v1", "due")
    await index.counts()
    # the counts drifted (a crash between a mark's two writes)
    await db["open_visits_totals"].update_one({"_id": TOTALS}, {"$inc": {"n.due": 5}})
    assert await index.counts() == {"due": 6}

    async def state_of(item: str) -> Any:
        return "due"

    await index.heal(state_of)
    assert await index.counts() == {"due": 1}


async def test_a_heal_of_an_index_without_counts_stores_them() -> None:
    db = database()
    old = datetime.now(UTC) - timedelta(hours=1)
    await db["open_visits"].insert_many([{"_id": f"v{i}", "state": "due", "at": old} for i in range(3)])
    index = OpenIndex(db, "visits")

    async def state_of(item: str) -> Any:
        return "due"

    await index.heal(state_of)
    # stored by the heal: an entry written behind the index's back afterwards is not counted
    await db["open_visits"].insert_one({"_id": "v9", "state": "due", "at": datetime.now(UTC)})
    assert await index.counts() == {"due": 3}
