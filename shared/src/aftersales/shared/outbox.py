"""The transactional outbox without transactions.

An aggregate document carries its pending events in an `outbox` array. A state change and the events it
causes are one atomic update of that one document (`with_events`). The relay claims documents with
pending events under a lease, publishes their events in order, and pops each one only after the broker
acknowledged it. A crash can only re-publish (consumers dedupe by `ce_id`), never drop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from pymongo import ReturnDocument

from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Collection, Database, IndexSpec, merge_updates

log = logging.getLogger("aftersales.outbox")

OUTBOX_PENDING = Gauge("aftersales_outbox_pending", "Events written but not yet acknowledged by Kafka")
OUTBOX_PUBLISHED = Counter(
    "aftersales_outbox_published_total", "Events the outbox relay published", ["topic"]
)
OUTBOX_FAILURES = Counter("aftersales_outbox_publish_failures_total", "Failed outbox publish attempts")

Publisher = Callable[[str, CloudEvent], Awaitable[None]]


def outbox_entry(topic: str, event: CloudEvent) -> dict[str, Any]:
    """Return the stored form of one pending event."""
    return {**event.to_document(), "topic": str(topic)}


def with_events(update: Mapping[str, Any], topic: str, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """Return `update` extended to append `events` to the document's outbox in the same atomic write."""
    if not events:
        return dict(update)
    return merge_updates(
        update,
        {
            "$push": {"outbox": {"$each": [outbox_entry(topic, e) for e in events]}},
            "$set": {"outbox_pending": True},
        },
    )


def new_with_events(doc: Mapping[str, Any], topic: str, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """Return a new document that carries `events` in its outbox."""
    return {**doc, "outbox": [outbox_entry(topic, e) for e in events], "outbox_pending": bool(events)}


def outbox_indexes(collections: Sequence[str]) -> list[IndexSpec]:
    return [IndexSpec(c, [("outbox_pending", 1), ("outbox_lease", 1)]) for c in collections]


class OutboxRelay:
    """Publishes the pending events of some collections, in order per document."""

    def __init__(
        self,
        db: Database,
        collections: Sequence[str],
        publish: Publisher,
        *,
        topic_of: Callable[[str], str] = str,
        poll_interval_s: float = 0.5,
        lease_s: float = 30.0,
    ) -> None:
        self._collections = [db[c] for c in collections]
        self._publish = publish
        self._topic_of = topic_of
        self._poll_interval_s = poll_interval_s
        self._lease = timedelta(seconds=lease_s)
        self._owner = uuid.uuid4().hex
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Ask the relay to look for pending events now instead of at its next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, then drain once more so nothing written before shutdown waits."""
        while not stop.is_set():
            try:
                await self.drain()
                await self._refresh_gauge()
            except Exception:
                OUTBOX_FAILURES.inc()
                log.exception("outbox relay pass failed; will retry")
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=self._poll_interval_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        await self.drain()

    async def drain(self) -> int:
        """Publish every pending event this relay can claim; return how many it published."""
        published = 0
        for col in self._collections:
            while (doc := await self._claim(col)) is not None:
                published += await self._relay_document(col, doc)
        return published

    async def pending(self) -> int:
        """Return the number of documents with unpublished events."""
        total = 0
        for col in self._collections:
            total += await col.count_documents({"outbox_pending": True})
        return total

    async def _refresh_gauge(self) -> None:
        OUTBOX_PENDING.set(await self.pending())

    async def _claim(self, col: Collection) -> dict[str, Any] | None:
        now = datetime.now(UTC)
        return await col.find_one_and_update(
            {"outbox_pending": True, "$or": [{"outbox_lease": None}, {"outbox_lease": {"$lt": now}}]},
            {"$set": {"outbox_lease": now + self._lease, "outbox_owner": self._owner}},
            return_document=ReturnDocument.AFTER,
        )

    async def _relay_document(self, col: Collection, doc: Mapping[str, Any]) -> int:
        count = 0
        try:
            for entry in doc.get("outbox", []):
                await self._publish(self._topic_of(entry["topic"]), CloudEvent.from_document(entry))
                OUTBOX_PUBLISHED.labels(entry["topic"]).inc()
                # Pop only the event we just published: the head of the queue with this id.
                await col.update_one(
                    {"_id": doc["_id"], "outbox.0.id": entry["id"]}, {"$pop": {"outbox": -1}}
                )
                count += 1
        finally:
            # Clear the flag only if no new event arrived meanwhile; always give up the lease.
            await col.update_one(
                {"_id": doc["_id"], "outbox.0": {"$exists": False}},
                {"$set": {"outbox_pending": False}},
            )
            await col.update_one(
                {"_id": doc["_id"], "outbox_owner": self._owner}, {"$set": {"outbox_lease": None}}
            )
        return count
