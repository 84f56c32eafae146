"""A small index of the items still open (visits, complaints), for gauges that count them by state.

Counting open items with a query over the whole collection is a scan on FerretDB that grows with the
history. Instead a store marks an item's state here *before* writing the item itself (and clears it when
the item closes), so this collection holds only open items and counting it costs as much as the open
work. A crash or a lost race between the two writes leaves an entry that says too much; `heal` checks
entries older than a minute against the items themselves, by `_id`, and corrects them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from aftersales.shared.mongo import Database

StateOf = Callable[[str], Awaitable[str | None]]  # the item's real state by id; None = closed or missing


class OpenIndex:
    def __init__(self, db: Database, name: str) -> None:
        self._col = db[f"open_{name}"]

    async def mark(self, item_id: str, state: str | None) -> None:
        """Record the state an item is about to have; None when it is about to close."""
        if state is None:
            await self._col.delete_one({"_id": item_id})
        else:
            await self._col.update_one(
                {"_id": item_id}, {"$set": {"state": state, "at": datetime.now(UTC)}}, upsert=True
            )

    async def counts(self) -> dict[str, int]:
        """Return the number of open items by state."""
        return dict(Counter([doc["state"] async for doc in self._col.find({}, {"state": 1})]))

    async def heal(self, state_of: StateOf, *, older_than_s: float = 60.0) -> int:
        """Correct entries that disagree with their item (a crash or lost race); return how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        fixed = 0
        async for doc in self._col.find({}, {"state": 1, "at": 1}):
            if doc["at"] > cutoff:
                continue
            actual = await state_of(doc["_id"])
            if actual != doc["state"]:
                await self.mark(doc["_id"], actual)
                fixed += 1
        return fixed
