"""The grab-order pool's index in routing's MongoDB: one small entry per offered work order, keyed by its
`_id` like the queue, so a technician's pool lists his grid's offers without scanning the work orders.
The work order's status is the truth; an entry is written before its work order and dropped after it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.routing.technicians_store import Hint
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Collection, IndexSpec
from aftersales.shared.outbox import with_events

POOL = "pool"  # offered work orders by grid (抢单)
POOL_INDEXES = [IndexSpec(POOL, [("grid_id", 1), ("priority_rank", 1), ("offered_at", 1)])]
PENDING_OFFER_S = 60.0  # an entry whose work order is not written yet, younger than this, is kept
OFFERED = "offered"
WORK_ORDERS_COLLECTION = "work_orders"
READ_PROJECTION = {"outbox": 0, "applied_events": 0}


class PoolIndex:
    """Offered work orders by grid, and the pool's own writes on a work order."""

    pool: Collection
    queue: Collection
    work_orders: Collection
    hint: Hint

    async def offer_entry(
        self,
        ticket_id: str,
        *,
        grid_id: str,
        round_: int,
        offer_no: int,
        priority_rank: int,
        offered_at: datetime,
    ) -> None:
        """Add (or refresh) an offered work order's entry in its grid's pool (idempotent)."""
        entry = {
            "grid_id": grid_id,
            "round": round_,
            "offer_no": offer_no,
            "priority_rank": priority_rank,
            "offered_at": offered_at,
        }
        await self.pool.update_one({"_id": ticket_id}, {"$set": entry}, upsert=True)

    async def unoffer(self, ticket_id: str) -> None:
        """Drop a work order's pool entry (claimed, fallen back, moved or ended); idempotent."""
        await self.pool.delete_one({"_id": ticket_id})

    async def offered_everywhere(self) -> list[dict[str, Any]]:
        """Return every offered work order as stored (the reconciler's full pass: the pool index is as
        small as the offered work; each entry's work order read by `_id`, stale entries skipped)."""
        out = []
        async for entry in self.pool.find({}):
            wo = await self.work_orders.find_one({"_id": entry["_id"]}, READ_PROJECTION)
            if wo is not None and wo["status"] == OFFERED and _same_offer(wo, entry):
                out.append(wo)
        return out

    async def offered_docs(self, grid_id: str, limit: int) -> list[dict[str, Any]]:
        """Return the offered work orders of a grid as stored, priority first, then age; entries a crash
        or a lost race left behind are dropped (young ones may belong to a write under way)."""
        entries = [
            e
            async for e in self.pool.find({"grid_id": grid_id})
            .sort([("priority_rank", 1), ("offered_at", 1)])
            .limit(limit)
        ]
        out = []
        cutoff = datetime.now(UTC) - timedelta(seconds=PENDING_OFFER_S)
        for entry in entries:
            doc = await self.work_orders.find_one({"_id": entry["_id"]}, READ_PROJECTION)
            if (
                doc is not None
                and doc["status"] == OFFERED
                and _same_offer(doc, entry)
                and doc["grid_id"] == grid_id
            ):
                out.append(doc)
            elif entry["offered_at"] < cutoff:
                await self.pool.delete_one({"_id": entry["_id"], "offer_no": entry["offer_no"]})
        return out

    async def decline_offer(
        self,
        ticket_id: str,
        *,
        round_: int,
        offer_no: int,
        technician_id: str,
        now: datetime,
        events: Sequence[CloudEvent],
    ) -> bool:
        """Record a technician's decline of the current offer (once); True if this call recorded it."""
        result = await self.work_orders.update_one(
            {
                "_id": ticket_id,
                "round": round_,
                "status": OFFERED,
                "offer_no": offer_no,
                "declined": {"$ne": technician_id},
            },
            with_events(
                {"$addToSet": {"declined": technician_id}, "$set": {"updated_at": now}},
                Topic.ASSIGNMENTS,
                events,
            ),
        )
        if result.modified_count == 1 and events:
            self.hint(WORK_ORDERS_COLLECTION, ticket_id)
        return result.modified_count == 1

    async def queued_ids(self, grid_id: str, limit: int) -> list[str]:
        """Return the ids in a grid's queue index (e.g. the unrouted work orders), oldest first."""
        cursor = self.queue.find({"grid_id": grid_id}, {"_id": 1}).sort(
            [("priority_rank", 1), ("queued_at", 1)]
        )
        cursor = cursor.limit(limit)
        return [d["_id"] async for d in cursor]


def _same_offer(wo: dict[str, Any], entry: dict[str, Any]) -> bool:
    return bool(wo["round"] == entry["round"] and wo.get("offer_no") == entry["offer_no"])
