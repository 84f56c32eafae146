"""The MongoDB-wire server in use must give single-document atomicity under concurrency, as MongoDB does.

FerretDB 1.x alone does not (its SQLite backend reads then writes in separate transactions); the local
build in deploy/local/ferretdb serializes write commands to restore it. These tests fail on a server
that lets two conditional updates of one document both win, or loses `$inc` increments.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from harness import Infra, mongo, unique
from pymongo import ReturnDocument, UpdateOne


async def test_racing_conditional_updates_have_exactly_one_winner(infra: Infra) -> None:
    client = mongo(infra)
    col = client[unique("atomic_")]["docs"]
    try:
        for round_ in range(5):
            await col.insert_one({"_id": round_, "state": "pending"})
            results = await asyncio.gather(
                *(
                    col.update_one(
                        {"_id": round_, "state": "pending"}, {"$set": {"state": "claimed", "by": i}}
                    )
                    for i in range(12)
                )
            )
            assert sum(r.modified_count for r in results) == 1
    finally:
        await client.drop_database(col.database.name)
        await client.close()


async def test_capped_increments_never_overshoot_or_get_lost(infra: Infra) -> None:
    client = mongo(infra)
    col = client[unique("atomic_")]["technicians"]
    try:
        await col.insert_one({"_id": "tech", "load": 0, "hits": 0})
        results = await asyncio.gather(
            *(col.update_one({"_id": "tech", "load": {"$lt": 5}}, {"$inc": {"load": 1}}) for _ in range(30)),
            *(col.update_one({"_id": "tech"}, {"$inc": {"hits": 1}}) for _ in range(30)),
        )
        doc = await col.find_one({"_id": "tech"})
        assert doc is not None
        assert sum(r.modified_count for r in results[:30]) == 5
        assert doc["load"] == 5
        assert doc["hits"] == 30
    finally:
        await client.drop_database(col.database.name)
        await client.close()


async def test_writes_to_other_collections_of_one_database_at_once_keep_each_atomic(infra: Infra) -> None:
    """Racing writes spread over several collections of one database (one SQLite file): each collection
    still gets exactly one winner and no lost increment. (A front locking per collection instead of per
    database passed this too, and was slower: SQLite commits one transaction per file at a time, and
    writers waiting on its busy handler sleep.)"""
    client = mongo(infra)
    db = client[unique("atomic_")]
    names = [f"c{i}" for i in range(4)]
    try:
        for name in names:
            await db[name].insert_one({"_id": "doc", "load": 0, "hits": 0, "state": "pending"})
        results = await asyncio.gather(
            *(
                db[name].update_one({"_id": "doc", "load": {"$lt": 3}}, {"$inc": {"load": 1}})
                for name in names
                for _ in range(10)
            ),
            *(
                db[name].update_one({"_id": "doc"}, {"$inc": {"hits": 1}})
                for name in names
                for _ in range(10)
            ),
            *(
                db[name].update_one({"_id": "doc", "state": "pending"}, {"$set": {"state": f"by{i}"}})
                for name in names
                for i in range(6)
            ),
            *(db[name].insert_one({"_id": f"new-{i}"}) for name in names for i in range(10)),
        )
        capped, claims = results[: 10 * len(names)], results[20 * len(names) : 26 * len(names)]
        assert sum(r.modified_count for r in capped) == 3 * len(names)
        assert sum(r.modified_count for r in claims) == len(names)
        for name in names:
            doc = await db[name].find_one({"_id": "doc"})
            assert doc is not None and doc["load"] == 3 and doc["hits"] == 10
            assert doc["state"].startswith("by")
            assert await db[name].count_documents({}) == 11
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_bulk_writes_of_hundreds_of_statements_complete(infra: Infra) -> None:
    """FerretDB 1.24 alone never answers an update of 100 statements or more (and then nothing else);
    the local front advertises a smaller maxWriteBatchSize so the driver splits bulks below it."""
    client = mongo(infra)
    col = client[unique("atomic_")]["facts"]
    try:
        await col.insert_many([{"_id": f"f{i}", "n": 0} for i in range(250)])
        updates = [UpdateOne({"_id": f"f{i}"}, {"$inc": {"n": 1}}) for i in range(250)]
        result = await asyncio.wait_for(col.bulk_write(updates, ordered=False), timeout=60)
        assert result.modified_count == 250
        assert await col.count_documents({"n": 1}) == 250
    finally:
        await client.drop_database(col.database.name)
        await client.close()


async def test_find_one_and_update_claims_are_unique(infra: Infra) -> None:
    client = mongo(infra)
    col = client[unique("atomic_")]["jobs"]
    try:
        await col.insert_many([{"_id": i, "state": "pending"} for i in range(60)])
        claimed: list[int] = []

        async def worker() -> None:
            while doc := await col.find_one_and_update(
                {"state": "pending"}, {"$set": {"state": "running"}}, return_document=ReturnDocument.AFTER
            ):
                claimed.append(doc["_id"])

        await asyncio.gather(*(worker() for _ in range(4)))
        assert sorted(claimed) == list(range(60))
    finally:
        await client.drop_database(col.database.name)
        await client.close()


CONDITIONAL_CASES = [
    # (extra filter beside _id, whether document "a" matches)
    ({"state": "pending"}, True),
    ({"state": "running"}, False),
    ({"state": {"$ne": "done"}}, True),
    ({"state": {"$in": ["pending", "done"]}}, True),
    ({"state": {"$nin": ["pending"]}}, False),
    ({"n": {"$lt": 5}}, True),
    ({"n": {"$gte": 7}}, False),
    ({"n": {"$gt": 1, "$lt": 5}}, True),
    ({"due": {"$lte": datetime(2026, 1, 1, tzinfo=UTC)}}, True),
    ({"due": {"$lt": datetime(2025, 12, 31, tzinfo=UTC)}}, False),
    ({"applied": {"$ne": "ev1"}}, False),
    ({"applied": {"$ne": "ev9"}}, True),
    ({"applied": "ev2"}, True),
    ({"outbox.0": {"$exists": True}}, True),
    ({"outbox.1": {"$exists": True}}, False),
    ({"outbox.0.id": "e1"}, True),
    ({"missing": None}, True),
    ({"missing": {"$exists": True}}, False),
    ({"lease": None}, True),
    ({"sub.k": 1}, True),
    ({"sub.k": {"$gt": 1}}, False),
    ({"state": "pending", "n": {"$gt": 5}}, False),
]


@pytest.mark.parametrize(("condition", "expected"), CONDITIONAL_CASES)
async def test_conditional_update_semantics(infra: Infra, condition: dict[str, Any], expected: bool) -> None:
    """Conditional writes mean the same as on MongoDB (the local FerretDB front evaluates these itself)."""
    client = mongo(infra)
    col = client[unique("cond_")]["docs"]
    try:
        await col.insert_one(
            {
                "_id": "a",
                "state": "pending",
                "n": 3,
                "due": datetime(2026, 1, 1, tzinfo=UTC),
                "applied": ["ev1", "ev2"],
                "outbox": [{"id": "e1"}],
                "lease": None,
                "sub": {"k": 1},
            }
        )
        updated = await col.update_one({"_id": "a", **condition}, {"$inc": {"hits": 1}})
        found = await col.find_one_and_update(
            {"_id": "a", **condition}, {"$inc": {"hits": 1}}, return_document=ReturnDocument.AFTER
        )
        assert updated.matched_count == int(expected)
        assert (found is not None) == expected
        doc = await col.find_one({"_id": "a"})
        assert doc is not None and doc.get("hits", 0) == (2 if expected else 0)
        missing = await col.update_one({"_id": "zz", **condition}, {"$inc": {"hits": 1}})
        assert missing.matched_count == 0
    finally:
        await client.drop_database(col.database.name)
        await client.close()
