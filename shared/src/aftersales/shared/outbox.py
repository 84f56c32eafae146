"""The transactional outbox without transactions.

An aggregate document carries its pending events in an `outbox` array. A state change and the events it
causes are one atomic update of that one document (`with_events`). After the write, the store calls
`relay.notify(collection, doc_id)`; the relay reads that document by `_id`, publishes its events in
order, waits for each broker acknowledgement, and then `$pullAll`s exactly the entries it published, so
an event appended meanwhile stays queued. A crash can only re-publish (consumers dedupe by `ce_id`),
never drop. A document whose publish fails is queued again, so a running relay never needs a sweep to
find its own work.

Events are left behind only by a relay that stopped without its last flush (killed, crashed), or by a
write whose outcome the database never confirmed (its caller got an error and never notified the relay).
A **sweep** (every document whose outbox is not empty) recovers both, and runs only then, not on a
clock: each relay holds a lease in `outbox_relays` (renewed every `outbox_heartbeat_s`, deleted after
its last flush), so a start-up finds the lease of a relay that died (and sweeps), a running relay finds
a lease nobody renewed for `STALE_BEATS` heartbeats (and sweeps), and an unconfirmed write
(`mongo.unconfirmed_writes`) makes its own process sweep a heartbeat later. On MongoDB the sweep reads a
sparse index of the pending documents; on FerretDB 1.x it reads every document, which is why it must not
run on a clock there (`outbox_sweep_interval_s` adds such a clock, off by default), and why it runs beside
the fast path, never in its way, under its own timeout (`mongodb_scan_timeout_s`): a start-up sweep of a
large collection outlasts a socket timeout, and when it shared the fast path's loop, a relay whose sweep
kept timing out published nothing at all.

Every hot-path operation filters by `_id` alone. FerretDB 1.x pushes nothing else down to SQLite (any
other filter scans the whole collection), so scans are kept to the sweep. Two relays working on one
document at once (two replicas) only duplicate events; the first copy of each event is still in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from prometheus_client import Counter, Gauge

from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Collection, Database, IndexSpec, merge_updates, unconfirmed_writes

log = logging.getLogger("aftersales.outbox")

OUTBOX_PENDING = Gauge(
    "aftersales_outbox_pending",
    "Documents whose events this relay has to publish and Kafka has not acknowledged yet (grows while the "
    "broker is unreachable)",
)
OUTBOX_SWEEPS = Counter(
    "aftersales_outbox_sweeps",
    "Sweeps of the outbox collections completed, by why they ran (on FerretDB a sweep reads every "
    "document, so the replica answers slower meanwhile)",
    ["reason"],
)
OUTBOX_STARTED = Gauge(
    "aftersales_outbox_started",
    "1 once this process's relay has registered and recovered what a dead relay left (swept if needed)",
)
OUTBOX_OLDEST = Gauge(
    "aftersales_outbox_oldest_pending_seconds",
    "How long the document this relay was told about longest ago has waited for its events to be published "
    "(0: nothing waits); /readyz turns red past 60 s",
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
RELAYS = "outbox_relays"
REGISTRY = "registry"  # marker: relays of this database hold leases since this document was written
STALE_BEATS = 3  # heartbeats a lease may miss before its relay counts as gone
# A lease marked as left this long before a relay started (clocks of two hosts differ) is not news to
# it: the process that left wrote its timers before, and the start-up scan found them.
LEFT_BEFORE_START = timedelta(seconds=30)


@dataclass
class Peers:
    """The other relays of a database, as one heartbeat found them."""

    alive: set[Any] = field(default_factory=set)
    dead: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)


class RelayLeases:
    """The leases of the running relays of one database: one small document per process, by `_id`, so
    reading them all is cheap even where every query scans."""

    def __init__(self, db: Database, heartbeat_s: float) -> None:
        self._col = db[RELAYS]
        self.id = uuid.uuid4().hex
        self._stale = timedelta(seconds=heartbeat_s * STALE_BEATS)

    async def register(self) -> bool:
        """Take this relay's lease; return True when a start-up sweep is due: another relay's lease is
        there (it may have died a moment ago), or no relay ever registered here (data written before
        leases existed)."""
        held = [d async for d in self._col.find({}, {"left_at": 1})]
        await self.renew()
        return not any(d["_id"] == REGISTRY for d in held) or any(
            d["_id"] not in (REGISTRY, self.id) and d.get("left_at") is None for d in held
        )

    async def recovered(self) -> None:
        """Record that a start-up sweep went through (from now on relays hold leases here); written only
        after the sweep, so a start-up whose sweep failed midway sweeps again."""
        await self._col.update_one(
            {"_id": REGISTRY}, {"$setOnInsert": {"since": datetime.now(UTC)}}, upsert=True
        )

    async def renew(self) -> None:
        now = datetime.now(UTC)
        await self._col.update_one(
            {"_id": self.id},
            {"$set": {"alive_at": now}, "$setOnInsert": {"started_at": now, "host": socket.gethostname()}},
            upsert=True,
        )

    async def peers(self) -> Peers:
        """Return the other relays' leases: alive, stale (nobody renewed them for `STALE_BEATS`
        heartbeats: their relay died) and given up in a clean stop (their process left)."""
        cutoff = datetime.now(UTC) - self._stale
        peers = Peers()
        async for d in self._col.find({}, {"alive_at": 1, "left_at": 1}):
            if d["_id"] in (REGISTRY, self.id):
                continue
            if d.get("left_at") is not None:
                peers.left.append(d)
            elif d.get("alive_at", cutoff) <= cutoff:
                peers.dead.append(d)
            else:
                peers.alive.add(d["_id"])
        return peers

    async def forget(self, leases: Sequence[Mapping[str, Any]]) -> None:
        """Delete dead leases after their leftovers were swept (fenced: a relay that was only slow and
        renewed meanwhile keeps its lease)."""
        for lease in leases:
            await self._col.delete_one({"_id": lease["_id"], "alive_at": lease.get("alive_at")})

    async def release(self) -> None:
        """Give up this relay's lease: call only after its last flush left nothing behind. The lease is
        marked as left, not deleted, so running replicas learn that a process went away (the timers it
        scheduled need another replica to fire them); the first of them to see it forgets it."""
        await self._col.update_one({"_id": self.id}, {"$set": {"left_at": datetime.now(UTC)}})


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
        heartbeat_s: float = 10.0,
        sweep_interval_s: float = 0.0,
        scan_timeout_s: float = 600.0,
    ) -> None:
        self._db = db
        self._collections = list(collections)
        self._publish = publish
        self._topic_of = topic_of
        self._poll_interval_s = poll_interval_s
        self._heartbeat_s = heartbeat_s
        self._sweep_interval_s = sweep_interval_s  # a sweep on a clock as well (0: none)
        self._scan_timeout_s = scan_timeout_s  # how long one sweep's scan of a collection may take
        self.leases = RelayLeases(db, heartbeat_s)
        self._doubts_seen = unconfirmed_writes()
        self._doubted_at: float | None = None  # loop time an unconfirmed write was first seen
        self.registered = asyncio.Event()  # set once the start-up recovery is done (see `run`)
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queued: set[tuple[str, Any]] = set()
        # When each document still to be relayed was first told about (monotonic seconds), in that
        # order: the first entry is the one waiting longest (see `oldest_pending_s`).
        self._pending_since: dict[tuple[str, Any], float] = {}
        OUTBOX_OLDEST.set_function(self.oldest_pending_s)  # read at each scrape: it grows while stalled
        # One lock per document being relayed, with the number of tasks holding or awaiting it, so the
        # lock is dropped only when nobody waits for it (never two relays of one document at once).
        self._locks: dict[tuple[str, Any], tuple[asyncio.Lock, int]] = {}
        self._sweep_requested = asyncio.Event()
        self._drain_failing_since: float | None = None  # loop time publishing began failing (see below)
        self._sweep_failing_since: float | None = None  # loop time the slow path began failing
        self._work = asyncio.Event()  # set by notify(): the fast path has something to do
        self._peer_listeners: list[Callable[[str], None]] = []
        self._started_at = datetime.now(UTC)
        self._alive_peers: set[Any] = set()  # the leases alive at the last heartbeat
        self._told: set[Any] = set()  # the ended leases the listeners were told about
        self._doubt_told = False

    def on_peer_change(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` from a heartbeat that finds a process gone (its lease went stale, or it
        stopped cleanly) or a write of this process unconfirmed: what that process held in memory (the
        timers it scheduled) must be looked for in the database."""
        self._peer_listeners.append(listener)

    def notify(self, collection: str, doc_id: Any) -> None:
        """Tell the relay that `doc_id` in `collection` has new events (the fast path)."""
        key = (collection, doc_id)
        if key not in self._queued:
            self._pending_since.setdefault(key, time.monotonic())  # a failed relay keeps its first time
            self._queued.add(key)
            self._queue.put_nowait(key)
            OUTBOX_PENDING.set(len(self._queued))
        self._work.set()

    def wake(self) -> None:
        """Ask for a sweep of every collection soon (the slow path; prefer `notify`)."""
        self._sweep_requested.set()

    def oldest_pending_s(self) -> float:
        """Seconds the document told about longest ago has waited for its events to be published (0: none
        waits). Unlike `stalled_since`, this also grows when publishing works but falls behind."""
        first = next(iter(self._pending_since.values()), None)
        return 0.0 if first is None else max(0.0, time.monotonic() - first)

    @property
    def stalled_since(self) -> float | None:
        """Loop time the first failed pass of a failing streak began (publishing, or a sweep), or None."""
        failing = [t for t in (self._drain_failing_since, self._sweep_failing_since) if t is not None]
        return min(failing, default=None)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, then publish what is still queued so nothing written waits.

        Two loops: the fast path publishes notified documents as they come; the slow path takes this
        relay's lease, renews it, and runs the sweeps (at start-up for a relay that died, later for one
        whose lease went stale or a write of this process left unconfirmed). A sweep reads a whole
        collection on FerretDB: it runs under `scan_timeout_s`, not the socket timeout, and however long
        it takes or often it fails, new events keep flowing."""
        slow = asyncio.create_task(self._recover(stop), name="outbox-sweeps")
        try:
            await self._relay_notified(stop)
            await self._drain_queue()
            await slow  # it ends its pass (a beat forgets the leases it swept for), then stops
        finally:
            if not slow.done():  # cancelled (the shutdown's grace ran out): so is the slow path
                slow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slow
        await self._drain_queue()

    async def _relay_notified(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await self._drain_queue()
                self._drain_failing_since = None
            except Exception:
                OUTBOX_FAILURES.inc()
                self._drain_failing_since = self._drain_failing_since or loop.time()
                log.exception("outbox relay pass failed; will retry")
                await asyncio.sleep(self._poll_interval_s)
            await self._wait_for_work(stop, wait_s=self._poll_interval_s * 10)

    async def _recover(self, stop: asyncio.Event) -> None:
        """The slow path: lease, heartbeats and sweeps (see `run`)."""
        loop = asyncio.get_running_loop()
        next_beat = next_sweep = loop.time()
        startup_owed: bool | None = None  # None: the lease is not taken yet
        while not stop.is_set():
            try:
                if startup_owed is None:
                    startup_owed = await self.leases.register()
                if startup_owed:  # recover what a relay that died left behind
                    await self._sweep_alive("start-up")
                    await self.leases.recovered()
                    startup_owed = False
                if not self.registered.is_set():
                    self.registered.set()
                    OUTBOX_STARTED.set(1)
                    next_sweep = loop.time() + self._sweep_interval_s
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self._heartbeat_s  # a failed beat waits for the next one
                    await self._beat(loop.time())
                requested = self._sweep_requested.is_set()
                if requested or (self._sweep_interval_s and loop.time() >= next_sweep):
                    self._sweep_requested.clear()
                    await self._sweep_alive("requested" if requested else "interval")
                    next_sweep = loop.time() + self._sweep_interval_s
                self._sweep_failing_since = None
            except Exception:
                OUTBOX_FAILURES.inc()
                self._sweep_failing_since = self._sweep_failing_since or loop.time()
                log.exception("outbox relay sweep or heartbeat failed; will retry")
                await asyncio.sleep(self._poll_interval_s)
            due = min(next_beat, next_sweep) if self._sweep_interval_s else next_beat
            wait_s = max(0.0, due - loop.time()) if self.registered.is_set() else 0.0
            await first_of(stop, self._sweep_requested, timeout_s=wait_s)

    async def _beat(self, now: float) -> None:
        """Renew this relay's lease; sweep for a relay whose lease went stale (then forget the lease), or
        a heartbeat after a write of this process went unconfirmed."""
        await self.leases.renew()
        doubts = unconfirmed_writes()
        if doubts != self._doubts_seen and self._doubted_at is None:
            self._doubted_at = now
        peers = await self.leases.peers()
        dead, left = peers.dead, peers.left
        doubtful = self._doubted_at is not None and now - self._doubted_at >= self._heartbeat_s
        self._tell_peer_change(peers, doubtful)
        if dead or doubtful:
            await self._sweep_alive("dead relay" if dead else "unconfirmed write")
            if doubtful:  # an unconfirmed write since this sweep began is swept after the next heartbeat
                self._doubts_seen, self._doubted_at = doubts, None
                self._doubt_told = False
        await self.leases.forget([*dead, *left])

    async def _sweep_alive(self, reason: str) -> None:
        """Sweep while renewing this relay's lease every heartbeat: on FerretDB a sweep can take minutes,
        and a lease left unrenewed that long makes every peer take this relay for dead and sweep too."""
        renewing = asyncio.create_task(self._renew_every_beat(), name="outbox-lease-during-sweep")
        try:
            await self.sweep(reason)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_every_beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self.leases.renew()
            except Exception as exc:  # the next beat tries again; a sweep that fails says so itself
                log.warning("outbox lease not renewed during a sweep", extra={"error": repr(exc)[:300]})

    def _tell_peer_change(self, peers: Peers, doubtful: bool) -> None:
        """Tell the listeners, once per process gone and once per doubt: a lease that went stale, one
        marked as left after this relay started (what left before, its start-up scan saw), and one
        that was alive at the last heartbeat and is now gone without either (a relay of an older
        version deletes its lease on a clean stop, or another replica forgot it first)."""
        ended = {d["_id"] for d in (*peers.dead, *peers.left)}
        vanished = self._alive_peers - peers.alive - ended
        fresh = {d["_id"] for d in peers.dead} | {
            d["_id"] for d in peers.left if d["left_at"] >= self._started_at - LEFT_BEFORE_START
        }
        fresh -= self._told
        reasons = [
            *(["dead relay"] if any(d["_id"] in fresh for d in peers.dead) else []),
            *(["relay left"] if vanished or fresh - {d["_id"] for d in peers.dead} else []),
            *(["unconfirmed write"] if doubtful and not self._doubt_told else []),
        ]
        self._alive_peers = peers.alive
        self._told = (self._told | fresh) & ended  # forget ids whose lease is gone: the set stays small
        self._doubt_told = self._doubt_told or doubtful
        for reason in reasons[:1]:
            for listener in self._peer_listeners:
                listener(reason)

    async def release(self) -> None:
        """Give up this relay's lease after the last flush left nothing queued (a clean shutdown): the
        next start-up needs no sweep for this process."""
        if self._queue.empty():
            await self.leases.release()

    async def _wait_for_work(self, stop: asyncio.Event, wait_s: float) -> None:
        if not self._queue.empty():
            return
        self._work.clear()
        await first_of(stop, self._work, timeout_s=wait_s)

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
            for key, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    continue
                self._pending_since.pop(key, None)
                if key in self._queued:  # told again while it was being relayed: it waits from now
                    self._pending_since[key] = time.monotonic()
            for (collection, doc_id), _ in failed:
                self.notify(collection, doc_id)
            OUTBOX_PENDING.set(len(self._queued))
            if failed:
                raise failed[0][1]
        return published

    async def sweep(self, reason: str = "requested") -> int:
        """Queue every document whose outbox is not empty and publish what is queued; return how many
        events were published (what fails to publish stays queued, like any notified document).

        The scan runs under `scan_timeout_s` instead of the client's socket timeout: on FerretDB it
        decodes every document of the collection, which takes longer than any single operation should
        as the collection grows (a sweep that always timed out would never recover anything)."""
        for name in self._collections:
            with pymongo.timeout(self._scan_timeout_s):
                found = [d["_id"] async for d in self._db[name].find(PENDING_QUERY, {"_id": 1})]
            for doc_id in found:
                self.notify(name, doc_id)
        OUTBOX_SWEEPS.labels(reason).inc()
        return await self._drain_queue()

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


async def first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until one of `events` is set, or `timeout_s` passed."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
