"""The transactional outbox without transactions.

An aggregate document carries its pending events in an `outbox` array. A state change and the events it
causes are one atomic update of that one document (`with_events`). After the write, the store calls
`relay.notify(collection, doc_id)`; the relay reads that document by `_id`, publishes its events in
order, waits for each broker acknowledgement, and then `$pullAll`s exactly the entries it published, so
an event appended meanwhile stays queued. A crash can only re-publish (consumers dedupe by `ce_id`),
never drop: a sweep at start-up finds documents whose outbox is not empty, which recovers what a
crashed process left (a crashed pod is restarted, and any replica's start-up sweep covers them all); a
document whose publish fails is queued again, so a running relay never needs a sweep to find its own
work. A rare periodic sweep (`outbox_sweep_interval_s`, 10 minutes by default) is the last safety net,
for a replica that died and was never started again.

Every hot-path operation filters by `_id` alone. FerretDB 1.x pushes nothing else down to SQLite (any
other filter scans the whole collection), so scans are kept to the sweep. Two relays working on one
document at once (two replicas) only duplicate events; the first copy of each event is still in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Collection, Database, IndexSpec, merge_updates

log = logging.getLogger("aftersales.outbox")

OUTBOX_PENDING = Gauge("aftersales_outbox_pending", "Events written but not yet acknowledged by Kafka")
OUTBOX_SWEEPS = Counter(
    "aftersales_outbox_sweeps",
    "Sweeps of the outbox collections completed (the start-up one first: on FerretDB it reads every "
    "document, so a freshly started replica answers slower until it is done)",
)
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
    return merge_updates(update, {"$push": {"outbox": {"$each": [outbox_entry(topic, e) for e in events]}}})


def new_with_events(doc: Mapping[str, Any], topic: str, events: Sequence[CloudEvent]) -> dict[str, Any]:
    """Return a new document that carries `events` in its outbox."""
    return {**doc, "outbox": [outbox_entry(topic, e) for e in events]}


def outbox_indexes(collections: Sequence[str]) -> list[IndexSpec]:
    """The sweep's index: sparse, so on MongoDB it holds only documents with pending events and the
    sweep walks those, not the history (FerretDB 1.x accepts it and scans anyway, hence the rare sweep)."""
    return [
        IndexSpec(c, [("outbox.id", 1)], name="outbox_pending", options={"sparse": True}) for c in collections
    ]


PENDING_QUERY = {"outbox.id": {"$exists": True}}
RELAY_CONCURRENCY = 32  # documents relayed at once; events of one document are always sequential


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
        sweep_interval_s: float = 30.0,
    ) -> None:
        self._db = db
        self._collections = list(collections)
        self._publish = publish
        self._topic_of = topic_of
        self._poll_interval_s = poll_interval_s
        self._sweep_interval_s = sweep_interval_s
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queued: set[tuple[str, Any]] = set()
        # One lock per document being relayed, with the number of tasks holding or awaiting it, so the
        # lock is dropped only when nobody waits for it (never two relays of one document at once).
        self._locks: dict[tuple[str, Any], tuple[asyncio.Lock, int]] = {}
        self._sweep_requested = asyncio.Event()
        self.stalled_since: float | None = None  # loop time of the first failed pass of a failing streak
        self._work = asyncio.Event()  # set by notify() and wake(): the run loop has something to do

    def notify(self, collection: str, doc_id: Any) -> None:
        """Tell the relay that `doc_id` in `collection` has new events (the fast path)."""
        key = (collection, doc_id)
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)
        self._work.set()

    def wake(self) -> None:
        """Ask for a sweep of every collection soon (the slow path; prefer `notify`)."""
        self._sweep_requested.set()
        self._work.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, then publish what is still queued so nothing written waits."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()  # sweep once at start-up: recover events a crash left behind
        while not stop.is_set():
            try:
                if self._sweep_requested.is_set() or loop.time() >= next_sweep:
                    self._sweep_requested.clear()
                    await self.sweep()
                    next_sweep = loop.time() + self._sweep_interval_s
                await self._drain_queue()
                self.stalled_since = None
            except Exception:
                OUTBOX_FAILURES.inc()
                if self.stalled_since is None:
                    self.stalled_since = loop.time()
                log.exception("outbox relay pass failed; will retry")
                await asyncio.sleep(self._poll_interval_s)
            await self._wait_for_work(
                stop, wait_s=min(self._poll_interval_s * 10, max(0.0, next_sweep - loop.time()))
            )
        await self._drain_queue()

    async def _wait_for_work(self, stop: asyncio.Event, wait_s: float) -> None:
        if not self._queue.empty() or self._sweep_requested.is_set():
            return
        self._work.clear()
        waiters = [asyncio.ensure_future(self._work.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()

    async def _drain_queue(self) -> int:
        """Relay every notified document, up to RELAY_CONCURRENCY at a time (order is per document).

        A document whose relay fails is queued again before the failure is raised (the caller backs
        off), so nothing notified is forgotten while the process lives."""
        published = 0
        while not self._queue.empty():
            batch: list[tuple[str, Any]] = []
            while not self._queue.empty() and len(batch) < RELAY_CONCURRENCY:
                key = self._queue.get_nowait()
                self._queued.discard(key)
                batch.append(key)
            results = await asyncio.gather(
                *(self.relay_document(c, d) for c, d in batch), return_exceptions=True
            )
            failed = [(key, r) for key, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
            published += sum(r for r in results if isinstance(r, int))
            if failed:
                for (collection, doc_id), _ in failed:
                    self.notify(collection, doc_id)
                raise failed[0][1]
        return published

    async def sweep(self) -> int:
        """Publish the events of every document whose outbox is not empty; return how many."""
        published = 0
        pending_docs = 0
        for name in self._collections:
            ids = [d["_id"] async for d in self._db[name].find(PENDING_QUERY, {"_id": 1})]
            pending_docs += len(ids)
            for start in range(0, len(ids), RELAY_CONCURRENCY):
                chunk = ids[start : start + RELAY_CONCURRENCY]
                published += sum(await asyncio.gather(*(self.relay_document(name, d) for d in chunk)))
        OUTBOX_PENDING.set(pending_docs)
        OUTBOX_SWEEPS.inc()
        return published

    async def drain(self, *, sweep: bool = True) -> int:
        """Publish everything pending now (queued, and swept unless `sweep` is False); return how many."""
        published = await self._drain_queue()
        return published + (await self.sweep() if sweep else 0)

    async def pending(self) -> int:
        """Return the number of documents with unpublished events."""
        total = 0
        for name in self._collections:
            total += await self._db[name].count_documents(PENDING_QUERY)
        return total

    async def relay_document(self, collection: str, doc_id: Any) -> int:
        """Publish one document's pending events in order; remove exactly those after the broker has them."""
        key = (collection, doc_id)
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._relay_document(self._db[collection], doc_id)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _relay_document(self, col: Collection, doc_id: Any) -> int:
        doc = await col.find_one({"_id": doc_id}, {"outbox": 1})
        entries: list[dict[str, Any]] = (doc or {}).get("outbox") or []
        if not entries:
            return 0
        for entry in entries:
            await self._publish(self._topic_of(entry["topic"]), CloudEvent.from_document(entry))
            OUTBOX_PUBLISHED.labels(entry["topic"]).inc()
        await col.update_one({"_id": doc_id}, {"$pullAll": {"outbox": entries}})
        return len(entries)
