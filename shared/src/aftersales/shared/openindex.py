"""A small index of the items still open (visits, complaints), with their counts by state for gauges.

Counting open items with a query over the whole collection is a scan on FerretDB that grows with the
history. Instead a store marks an item's state here *before* writing the item itself (and clears it when
the item closes), so this collection holds only open items. Open work can still be large (every resolved
ticket has a care visit open for months), so the counts by state are kept incrementally in one document
(`open_<name>_totals`): a mark swaps the entry and learns its previous state in one `findAndModify` by
`_id`, then moves the counts. Reading the counts is one read by `_id`, however much is open.

A crash or a lost race between the two writes of a store leaves an entry that says too much; a crash
between a mark's two writes leaves the counts off by one. `heal` checks the entries marked since the last
heal (older than a minute) against the items themselves, by `_id`, corrects them, and stores the counts
its walk found, only if no mark moved the counts meanwhile (the totals carry a version).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Database

StateOf = Callable[[str], Awaitable[str | None]]  # the item's real state by id; None = closed or missing
TOTALS = "totals"


class OpenIndex:
    def __init__(self, db: Database, name: str) -> None:
        self._col = db[f"open_{name}"]
        self._totals = db[f"open_{name}_totals"]

    async def mark(self, item_id: str, state: str | None) -> None:
        """Record the state an item is about to have; None when it is about to close."""
        # No projection: FerretDB 1.x does not implement one on findAndModify (the entries are tiny).
        if state is None:
            before = await self._col.find_one_and_delete({"_id": item_id})
        else:
            before = await self._col.find_one_and_update(
                {"_id": item_id},
                {"$set": {"state": state, "at": datetime.now(UTC)}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        previous = None if before is None else before.get("state")
        if previous == state:
            return
        moves = {f"n.{s}": d for s, d in ((previous, -1), (state, 1)) if s is not None}
        await self._totals.update_one({"_id": TOTALS}, {"$inc": {**moves, "v": 1}}, upsert=True)

    async def counts(self) -> dict[str, int]:
        """Return the number of open items by state (one read by `_id`; a walk only the first time)."""
        totals = await self._totals.find_one({"_id": TOTALS})
        if totals is None or not totals.get("exact"):  # an index kept before its counts were
            counted = Counter([doc["state"] async for doc in self._col.find({}, {"state": 1})])
            await self._store(totals, dict(counted))
            return dict(counted)
        return {state: int(n) for state, n in (totals.get("n") or {}).items() if n > 0}

    async def heal(self, state_of: StateOf, *, older_than_s: float = 60.0) -> int:
        """Correct entries that disagree with their item (a crash or lost race) and store the counts the
        walk found; return how many entries were corrected. Entries an earlier heal checked are not read
        again: an entry only goes wrong when it is marked, and a mark renews its `at`."""
        totals = await self._totals.find_one({"_id": TOTALS})
        since = (totals or {}).get("healed_to")
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        fixed = 0
        counted: Counter[str] = Counter()
        async for doc in self._col.find({}, {"state": 1, "at": 1}):
            state = doc["state"]
            if doc["at"] <= cutoff and (since is None or doc["at"] > since):
                state = await state_of(doc["_id"])
                if state != doc["state"]:
                    await self.mark(doc["_id"], state)
                    fixed += 1
            if state is not None:
                counted[state] += 1
        await self._store(totals, dict(counted))  # first: it creates the totals of an index that had none
        await self._totals.update_one(
            {"_id": TOTALS}, {"$set": {"healed_to": cutoff}, "$setOnInsert": {"v": 0}}, upsert=True
        )
        return fixed

    async def _store(self, totals: Mapping[str, Any] | None, counted: dict[str, int]) -> None:
        """Store counts found by a walk, unless a mark moved the counts since `totals` was read (then
        the counts kept by the marks stand, and the next heal stores its own)."""
        fields: dict[str, Any] = {"n": counted, "exact": True}
        if totals is None:
            try:
                await self._totals.insert_one({"_id": TOTALS, "v": 0, **fields})
            except DuplicateKeyError:
                pass  # a mark came first: the next count walks again
            return
        await self._totals.update_one(
            {"_id": TOTALS, "v": totals.get("v", 0)}, {"$set": fields, "$inc": {"v": 1}}
        )
