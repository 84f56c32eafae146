"""The overdue complaint and follow-up counts, kept as deadlines open, move and close: no walk of open work.

Open deadlines are many (every resolved ticket has a care visit open for months), so counting the
overdue ones by reading them all grows with open work. Instead each deadline is counted in a bucket of
its due minute (`due_minutes`, `_id` = `<list>|<minute>`), and one document per list (`overdue_totals`,
`_id` = "complaints" or "followups") holds `n`, the deadlines whose due minute is before `through`,
the first minute not yet matured. Every operation is by `_id`:

- A deadline opened, moved or closed moves one count: into or out of its minute's bucket while that
  bucket has not matured (one conditional `$inc`; a bucket that does not exist yet is first created
  empty by a pure `_id` upsert), else into or out of the list's total.
- `advance` matures the minutes that have passed, oldest first: it marks a bucket matured (one
  findAndModify, upserted so that every passed minute has one; nobody changes a matured bucket's `n`)
  and adds its `n` to the total in a write guarded by `through`, so a repeat after a crash, or another
  replica advancing at the same time, adds it once. Buckets are deleted two days after they matured;
  a deadline whose minute is before the `through` this process last read goes to the total directly.
- The first `advance` on a database without totals counts the deadlines written before this version
  (they carry no `counted` mark) once; every deadline written since carries the mark.

A failure between a deadline's write and its count (a crash, a database error, the consumer's handler
timeout) leaves the count off by one for good: the deadline write is idempotent, so the redelivered fold
finds nothing to move. Nothing heals that drift yet; the inspection report reads the deadlines
themselves, so its findings stay exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Collection, Database

MINUTES = "due_minutes"
TOTALS = "overdue_totals"
LEGACY = "legacy"  # marker in TOTALS: the deadlines written before counts were kept are counted
LISTS = ("complaints", "followups")
MINUTE = timedelta(minutes=1)
KEEP_MATURED = timedelta(days=2)
MAX_STEPS = 1440  # minutes matured per advance (a day of downtime is caught up in one pass)


def list_of(deadline: Mapping[str, Any]) -> str:
    """Return the list a deadline document is counted in."""
    return "complaints" if deadline["kind"] == "complaint" else "followups"


def minute_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def _bucket(name: str, minute: datetime) -> str:
    return f"{name}|{minute.strftime('%Y-%m-%dT%H:%M')}"


class OverdueCounter:
    def __init__(self, db: Database, deadlines: Collection) -> None:
        self._minutes: Collection = db[MINUTES]
        self._totals: Collection = db[TOTALS]
        self._deadlines = deadlines
        self._through: dict[str, datetime] = {}  # the last `through` read per list (it only grows)
        self._started = False

    async def track(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        """Move the counts for one deadline written as `after` (None: closed) over `before` (the
        document it replaced, None when there was none); a document without the `counted` mark was
        written before counts were kept and is counted by the first `counts`."""
        old = (list_of(before), minute_of(before["due_at"])) if before and before.get("counted") else None
        new = (list_of(after), minute_of(after["due_at"])) if after is not None else None
        if old == new:
            return
        if old is not None:
            await self._move(*old, -1)
        if new is not None:
            await self._move(*new, 1)

    async def _move(self, name: str, minute: datetime, delta: int) -> None:
        through = self._through.get(name) or await self._read_through(name)
        if through is None or minute >= through:
            bucket = {"_id": _bucket(name, minute)}
            if await self._add_unless_matured(bucket, delta):
                return
            # No bucket yet: create it empty (a pure `_id` upsert, which two writers can race safely and
            # FerretDB answers by `_id`), then count into it unless it matured meanwhile.
            await self._minutes.update_one(bucket, {"$setOnInsert": {"n": 0}}, upsert=True)
            if await self._add_unless_matured(bucket, delta):
                return
        await self._totals.update_one({"_id": name}, {"$inc": {"n": delta}})  # the minute matured

    async def _add_unless_matured(self, bucket: Mapping[str, Any], delta: int) -> bool:
        result = await self._minutes.update_one({**bucket, "matured": {"$ne": True}}, {"$inc": {"n": delta}})
        return result.matched_count == 1

    async def _read_through(self, name: str) -> datetime | None:
        doc = await self._totals.find_one({"_id": name})
        if doc is None:
            return None
        through: datetime = doc["through"]
        self._through[name] = through
        return through

    async def counts(self, now: datetime | None = None) -> dict[str, int]:
        """Mature the minutes passed by `now` and return the overdue count of each list."""
        target = minute_of(now or datetime.now(UTC))
        if not self._started:
            await self._start(target)
        return {name: max(0, await self._advance(name, target)) for name in LISTS}

    async def _advance(self, name: str, target: datetime) -> int:
        totals = await self._totals.find_one({"_id": name}) or {"n": 0, "through": target}
        n, through = int(totals.get("n", 0)), totals["through"]
        for _ in range(MAX_STEPS):
            if through >= target:
                break
            bucket = await self._minutes.find_one_and_update(
                {"_id": _bucket(name, through)},
                {"$set": {"matured": True}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            matured = int((bucket or {}).get("n", 0))
            moved = await self._totals.update_one(
                {"_id": name, "through": through},
                {"$inc": {"n": matured}, "$set": {"through": through + MINUTE}},
            )
            if moved.modified_count != 1:  # another replica advanced meanwhile: carry on from where it is
                totals = await self._totals.find_one({"_id": name}) or totals
                n, through = int(totals.get("n", 0)), totals["through"]
                continue
            await self._minutes.delete_one({"_id": _bucket(name, through - KEEP_MATURED)})
            n, through = n + matured, through + MINUTE
        self._through[name] = through
        return n

    async def _start(self, now_minute: datetime) -> None:
        """Once per database: create each list's totals from now, fold into them the buckets of passed
        minutes counted before the totals existed, then count the deadlines written before counts were
        kept (each marked `counted` in the same write that decides it is counted)."""
        if await self._totals.find_one({"_id": LEGACY}) is None:
            for name in LISTS:
                try:
                    await self._totals.insert_one({"_id": name, "n": 0, "through": now_minute})
                except DuplicateKeyError:
                    pass  # another replica (or an earlier start) created it
            began = {name: await self._read_through(name) or now_minute for name in LISTS}
            async for b in self._minutes.find({"matured": {"$ne": True}}, {"_id": 1}):  # once, small
                name, _, minute = str(b["_id"]).partition("|")
                # Only minutes before the totals began: later ones are the advance's (never both).
                if name in began and datetime.fromisoformat(minute).replace(tzinfo=UTC) < began[name]:
                    await self._mature_early(name, b["_id"])
            async for d in self._deadlines.find({"counted": {"$exists": False}}, {"_id": 1}):
                doc = await self._deadlines.find_one_and_update(
                    {"_id": d["_id"], "counted": {"$exists": False}}, {"$set": {"counted": True}}
                )
                if doc is not None:
                    await self.track(None, doc)
            await self._totals.update_one({"_id": LEGACY}, {"$set": {"done": True}}, upsert=True)
        self._started = True

    async def _mature_early(self, name: str, bucket_id: str) -> None:
        """Mature a bucket of a minute before the totals began, adding its count once."""
        bucket = await self._minutes.find_one_and_update(
            {"_id": bucket_id, "matured": {"$ne": True}}, {"$set": {"matured": True}}
        )
        if bucket is not None:
            await self._totals.update_one({"_id": name}, {"$inc": {"n": int(bucket.get("n", 0))}})
