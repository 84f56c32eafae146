"""Durable timers: SLA warnings and breaches, follow-up due times, complaint deadlines.

A timer is a document with a `due_at`. A replica claims a due timer in **one** conditional write: the
filter names the timer's `version` (the fencing token) and that it is pending or its lease ran out;
the update marks it running, sets the lease and bumps the version. Exactly one replica can win a
version; one whose lease ran out (it died or hung) can no longer finish or fail the timer, because its
fenced writes name a version that is gone. A replica whose own claim, failure or completion write went
unanswered (a frozen database, a broken connection) takes that timer again within seconds, fenced the
same way, instead of leaving it to the end of its lease. After the handler the timer is deleted (fenced),
so the collection holds only timers still to fire, and every scan of it stays as small as the open work.

A restart loses no timer (it is a document). A timer may fire again after a crash (claimed, handled, not
yet deleted), and a late `schedule` of a fired id schedules it anew: handlers write their effect with
`apply_once(..., event_id=timer id)` or check the aggregate's state, so a second firing changes nothing.

Each replica keeps a heap of due times: the timers it scheduled itself, plus those found by a scan of
the active timers. The scan runs on evidence, not on a clock: at start-up, and when the outbox relay's
heartbeat finds another process gone (its lease went stale, or it stopped cleanly and marked its lease
as left) or a write of this process unconfirmed (a `schedule` may have landed without its caller
learning). That is how the timers another replica scheduled and can no longer fire get a home, without a
periodic read of every pending timer (`scan_interval_s` adds a clock, off by default). Every hot-path
operation filters by `_id` (FerretDB 1.x scans the collection for anything else; its local front
evaluates the extra conditions of an `{_id: X, ...}` write under a lock).

Schedule a timer *before* the state change it belongs to; a handler checks the aggregate's state and
does nothing when the change never happened, so a crash between the two writes is harmless.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from prometheus_client import Counter, Gauge
from pymongo import ReturnDocument

from aftersales.shared.adaptive import AdaptiveLimit
from aftersales.shared.errors import is_unavailable
from aftersales.shared.failures import note_failure
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import first_of

log = logging.getLogger("aftersales.timers")

TIMERS_FIRED = Counter("aftersales_timers_fired_total", "Durable timers fired", ["kind"])
TIMER_FAILURES = Counter("aftersales_timer_failures_total", "Timer handler failures", ["kind"])
TIMERS_GAVE_UP = Counter(
    "aftersales_timers_failed_total",
    "Timers that failed MAX_ATTEMPTS times, not for an outage, and stopped firing (each needs a person)",
    ["kind"],
)
TIMER_SCANS = Counter(
    "aftersales_timer_scans_total",
    "Scans of the active timers (start-up, another process gone, an unconfirmed write, or a clock)",
    ["reason"],
)
LEASES_RENEWED = Counter(
    "aftersales_timer_leases_renewed_total", "Leases of timers renewed while their handler ran on"
)
ACTIVE_FOUND = Gauge("aftersales_timers_active_found", "Active timers the last scan found")

COLLECTION = "timers"
MAX_ATTEMPTS = 10
FIRE_CONCURRENCY = 16
ACTIVE = ("pending", "running")
# A claim or completion the database did not confirm is looked at again this soon (see `claim`).
LOOK_AGAIN = timedelta(seconds=2)
# A handler's timer is armed just before the write it belongs to, and may fire before that write lands
# (it fell due at once, or the database was slow). A handler whose aggregate is not yet where the timer
# was armed for raises RetryLater while `timer.attempts` is below this, then takes "that write never
# happened": retries after 2, 4, 8, 16 and 32 s outlast a database operation's 30 s socket timeout.
NOT_WRITTEN_RETRIES = 6
_DUE = {"due_at": 1, "lease_until": 1}
TIMER_INDEXES = [IndexSpec(COLLECTION, [("state", 1), ("due_at", 1)])]


@dataclass(frozen=True, slots=True)
class Timer:
    id: str
    kind: str
    due_at: datetime
    payload: Mapping[str, Any]
    group: str | None
    attempts: int
    version: int = 0  # the fencing token this replica holds while it fires the timer


TimerHandler = Callable[[Timer], Awaitable[None]]


class DurableTimers:
    """Schedule, cancel and fire timers stored in the service's own database."""

    def __init__(
        self,
        db: Database,
        *,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
        scan_interval_s: float = 0.0,
        handler_timeout_s: float = 120.0,
        scan_timeout_s: float = 600.0,
    ) -> None:
        self._col = db[COLLECTION]
        self._lease = timedelta(seconds=lease_s)
        # A handler running longer is cut (and its timer handed back): a hung handler holds its timer's
        # lease (renewed while it runs, see `_hold`) no longer than this.
        self._handler_timeout_s = handler_timeout_s
        self._poll_interval_s = poll_interval_s
        self._scan_interval_s = scan_interval_s  # a scan on a clock as well (0: only on evidence)
        self._scan_timeout_s = scan_timeout_s  # how long one scan may take (longer than a socket timeout)
        self._refresh_requested = True  # the first pass of `run` scans (start-up)
        self._owner = uuid.uuid4().hex
        self._firing: set[str] = set()  # the timers this replica's handlers are running now
        # timers fired at once: fewer while handlers time out (see `adaptive`)
        self._limit = AdaptiveLimit(FIRE_CONCURRENCY, what="timers")
        self._heap: list[tuple[datetime, str]] = []
        # timer id -> (due time of its live heap entry, stamp of that entry); older entries are skipped
        self._in_heap: dict[str, tuple[datetime, int]] = {}
        self._stamps = 0

    def _remember(self, timer_id: str, due_at: datetime) -> None:
        """Note a timer's due time: a new stamp each time (so a `cancel` in flight sees it was scheduled
        again, even for the same due time), a heap entry only when the due time is new."""
        known = self._in_heap.get(timer_id)
        self._stamps += 1
        self._in_heap[timer_id] = (due_at, self._stamps)
        if known is None or known[0] != due_at:
            heapq.heappush(self._heap, (due_at, timer_id))

    async def schedule(
        self,
        timer_id: str,
        kind: str,
        due_at: datetime,
        payload: Mapping[str, Any] | None = None,
        *,
        group: str | None = None,
    ) -> None:
        """Create the timer, or move it to a new due time."""
        if due_at.tzinfo is None:
            raise ValueError("due_at must be timezone-aware")
        await self._col.update_one(
            {"_id": timer_id},
            {
                "$set": {"kind": kind, "due_at": due_at, "payload": dict(payload or {}), "group": group},
                "$setOnInsert": {
                    "state": "pending",
                    "version": 0,
                    "attempts": 0,
                    "lease_until": None,
                    "created_at": datetime.now(UTC),
                },
            },
            upsert=True,
        )
        self._remember(timer_id, due_at)

    async def cancel(self, timer_id: str) -> bool:
        """Cancel (delete) a timer that has not fired; return True if it existed. Its heap entry is
        forgotten too (unless the timer was scheduled again meanwhile): before, each cancelled timer was
        still claimed when it came due, a findAndModify and a read for nothing (most SLA timers are
        cancelled by an accept or a resolution: in a chaos run, ~40 % of routing's claims)."""
        known = self._in_heap.get(timer_id)
        result = await self._col.delete_one({"_id": timer_id})
        if known is not None and self._in_heap.get(timer_id) is known:
            del self._in_heap[timer_id]  # its heap entry is passed over when it comes up
        return result.deleted_count == 1

    @property
    def firing(self) -> frozenset[str]:
        """The timers this replica's handlers are running now."""
        return frozenset(self._firing)

    async def get(self, timer_id: str) -> dict[str, Any] | None:
        return await self._col.find_one({"_id": timer_id})

    def request_refresh(self, reason: str = "requested") -> None:
        """Ask the run loop to scan for active timers at its next pass (another process went away)."""
        log.info("timers will be looked for", extra={"reason": reason})
        self._refresh_requested = True

    async def refresh(self) -> int:
        """Load every active timer into this replica's heap (finds timers other replicas scheduled).

        The collection holds only timers still to fire (fired ones are deleted), so this scan is as
        large as the open work, not as the history."""
        with pymongo.timeout(self._scan_timeout_s):  # on FerretDB: every document, beyond a socket timeout
            found = [d async for d in self._col.find({"state": {"$in": list(ACTIVE)}}, _DUE)]
        for doc in found:
            self._remember(doc["_id"], max(doc["due_at"], doc.get("lease_until") or doc["due_at"]))
        return len(found)

    async def claim(self, timer_id: str, now: datetime) -> Timer | None:
        """Try to win timer `timer_id` if it is due; return it, or None when not due or won elsewhere.

        A pending timer that is due (nearly all of them) is won in one findAndModify; anything else
        (running elsewhere or orphaned here, rescheduled, gone) is read first and decided on."""
        won = await self._col.find_one_and_update(
            {"_id": timer_id, "state": "pending", "due_at": {"$lte": now}},
            self._claiming(now),
            return_document=ReturnDocument.AFTER,
        )
        if won is not None:
            return _timer_of(won)
        doc = await self._col.find_one({"_id": timer_id})
        if doc is None or doc["state"] not in ACTIVE:
            return None
        if doc["due_at"] > now:
            self._remember(timer_id, doc["due_at"])  # rescheduled meanwhile
            return None
        lease_until = doc.get("lease_until")
        orphan = doc.get("owner") == self._owner and timer_id not in self._firing
        if doc["state"] == "running" and lease_until is not None and lease_until > now and not orphan:
            self._remember(timer_id, lease_until)  # another replica is firing it; look again after its lease
            return None
        # A running timer this replica owns but runs no handler for is one whose claim, failure or
        # completion write did not come back (the database froze or the connection broke): it is
        # taken again now, fenced by its version, not left until its lease runs out.
        version = doc.get("version", 0)
        taken = await self._col.update_one(
            {"_id": timer_id, "version": version, "state": {"$in": list(ACTIVE)}}, self._claiming(now)
        )
        if taken.modified_count != 1:
            return None  # another replica won this version (or it was rescheduled or cancelled)
        return _timer_of({**doc, "attempts": doc.get("attempts", 0) + 1, "version": version + 1})

    def _claiming(self, now: datetime) -> dict[str, Any]:
        """The write that claims a timer: running here under a lease, its version (the fence) bumped."""
        return {
            "$set": {"state": "running", "lease_until": now + self._lease, "owner": self._owner},
            "$inc": {"version": 1, "attempts": 1},
        }

    async def fire_due(
        self,
        handler: TimerHandler,
        *,
        now: datetime | None = None,
        limit: int = 1000,
        stop: asyncio.Event | None = None,
    ) -> int:
        """Fire up to `limit` due timers this replica knows of, up to `FIRE_CONCURRENCY` at a time (timers of
        different aggregates are independent; one aggregate arms one timer at a time), and wait for them;
        return how many completed. Once `stop` is set (shutdown) no further timer is claimed: the ones in
        flight finish, the rest stay pending for the next start or another replica. (`run` does not wait
        for a whole batch: it keeps claiming due timers while others are still firing.)"""
        now = now or datetime.now(UTC)
        due = self._pop_due(now, limit)
        return sum(await asyncio.gather(*(self._fire_one(handler, d, t, now, stop) for d, t in due)))

    def _pop_due(self, now: datetime, most: int) -> list[tuple[datetime, str]]:
        """Take up to `most` timers due by `now` off the heap."""
        due: list[tuple[datetime, str]] = []
        while self._heap and self._heap[0][0] <= now and len(due) < most:
            due_at, timer_id = heapq.heappop(self._heap)
            known = self._in_heap.get(timer_id)
            if known is None or known[0] != due_at:
                continue  # superseded by a newer heap entry, or cancelled
            del self._in_heap[timer_id]
            due.append((due_at, timer_id))
        return due

    async def _fire_one(
        self,
        handler: TimerHandler,
        due_at: datetime,
        timer_id: str,
        now: datetime,
        stop: asyncio.Event | None,
    ) -> bool:
        async with self._limit:
            if stop is not None and stop.is_set():
                self._remember(timer_id, due_at)
                return False
            try:
                timer = await self.claim(timer_id, now)
                return timer is not None and await self._fire(handler, timer)
            except Exception as exc:  # the database did not answer: whatever was written, look again
                self._remember(timer_id, datetime.now(UTC) + LOOK_AGAIN)
                log.warning(
                    "timer claim or completion not confirmed; will look again",
                    extra={"timer_id": timer_id, "error": repr(exc)[:300]},
                )
                return False

    async def _fire(self, handler: TimerHandler, timer: Timer) -> bool:
        self._firing.add(timer.id)
        try:
            return await self._fire_fenced(handler, timer)
        finally:
            self._firing.discard(timer.id)

    async def _fire_fenced(self, handler: TimerHandler, timer: Timer) -> bool:
        fence = {"_id": timer.id, "version": timer.version}
        try:
            await self._run_holding(handler, timer, fence)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                self._limit.timed_out()  # the store does not keep up: fewer timers at once
            TIMER_FAILURES.labels(timer.kind).inc()
            note_failure(*([timer.group] if timer.group else []))
            retry_at = datetime.now(UTC) + timedelta(seconds=min(2**timer.attempts, 300))
            # The database or broker unavailable backs off without limit: an outage of any length loses
            # no timer. Anything else gives up at MAX_ATTEMPTS and alerts, a handler that keeps timing out
            # or losing its race too (a bug looks like that; a person should look).
            gave_up = timer.attempts >= MAX_ATTEMPTS and not is_unavailable(exc)
            await self._col.update_one(
                fence,
                {
                    "$set": {
                        "state": "failed" if gave_up else "pending",
                        "due_at": retry_at,
                        "lease_until": None,
                        "last_error": repr(exc)[:500],
                    }
                },
            )
            if gave_up:
                TIMERS_GAVE_UP.labels(timer.kind).inc()
                log.error(
                    "timer failed for good",
                    extra={"timer_id": timer.id, "timer_kind": timer.kind, "attempts": timer.attempts},
                )
            else:
                self._remember(timer.id, retry_at)
                log.warning(
                    "timer handler failed; will retry",
                    extra={"timer_kind": timer.kind, "attempts": timer.attempts, "error": repr(exc)[:300]},
                )
            return False
        # Fenced: if the lease ran out and another replica took the timer, that replica finishes it.
        # find_one_and_delete is a findAndModify, which the local FerretDB front answers by `_id`.
        await self._col.find_one_and_delete(fence)
        self._limit.succeeded()
        TIMERS_FIRED.labels(timer.kind).inc()
        return True

    async def _run_holding(self, handler: TimerHandler, timer: Timer, fence: Mapping[str, Any]) -> None:
        holding = asyncio.create_task(self._hold(fence), name=f"timer-lease:{timer.id}")
        try:
            await asyncio.wait_for(handler(timer), self._handler_timeout_s)
        finally:
            holding.cancel()

    async def _hold(self, fence: Mapping[str, Any]) -> None:
        """Renew the lease of a timer this replica's handler is running, every third of the lease, until
        cancelled: a handler slowed by a busy database keeps its timer (before, it was cut at half the
        lease, and under load every cut halved the timers fired at once, down to one). A renewal that
        fails is tried again at the next third; should the lease run out meanwhile, another replica may
        take the timer, fenced by its version, and the handlers' own checks make a second run harmless."""
        every = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self._col.update_one(fence, {"$set": {"lease_until": datetime.now(UTC) + self._lease}})
                LEASES_RENEWED.inc()
            except Exception as exc:
                log.warning("timer lease not renewed; will try again", extra={"error": repr(exc)[:300]})

    async def run(self, handler: TimerHandler, stop: asyncio.Event) -> None:
        """Fire due timers until `stop` is set; scan the collection at start-up and when asked to (see
        `request_refresh`), and every `scan_interval_s` when that is set.

        Timers fire as tasks, up to the adaptive limit at once, and the loop claims the next due timer
        as soon as one finishes: a slow or hung handler (cut only at `handler_timeout_s`) holds one place,
        not every timer behind it (before, the loop waited for a whole batch, so one hung handler stopped
        all of this replica's timers for up to its timeout). When `stop` is set no further timer is
        claimed and the ones in flight finish; when the loop is cancelled, they are cancelled too (their
        timers stay running under a lease that is no longer renewed, and are taken again after it)."""
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + self._scan_interval_s
        inflight: set[asyncio.Task[bool]] = set()
        finished = asyncio.Event()

        def done(task: asyncio.Task[bool]) -> None:
            inflight.discard(task)
            finished.set()
            if not task.cancelled() and task.exception() is not None:
                log.error("timer task failed", exc_info=task.exception())

        try:
            while not stop.is_set():
                finished.clear()
                clock = self._scan_interval_s > 0 and loop.time() >= next_scan
                if self._refresh_requested or clock:
                    self._refresh_requested = False
                    try:
                        found = await self.refresh()
                        TIMER_SCANS.labels("interval" if clock else "evidence").inc()
                        ACTIVE_FOUND.set(found)
                        next_scan = loop.time() + self._scan_interval_s
                    except Exception:  # the timers this replica knows of still fire (below)
                        self._refresh_requested = True  # scanned in part: scan again
                        log.exception("timer scan failed; will retry")
                now = datetime.now(UTC)
                for due_at, timer_id in self._pop_due(now, self._limit.limit - len(inflight)):
                    task = asyncio.create_task(
                        self._fire_one(handler, due_at, timer_id, now, stop), name=f"timer:{timer_id}"
                    )
                    inflight.add(task)
                    task.add_done_callback(done)
                wait = self._poll_interval_s
                if self._heap and len(inflight) < self._limit.limit:  # else: woken when a place frees
                    until_due = (self._heap[0][0] - datetime.now(UTC)).total_seconds()
                    wait = min(wait, max(until_due, 0.01))
                await first_of(stop, finished, timeout_s=wait)
        finally:
            if inflight:
                if not stop.is_set():  # cancelled: so are the handlers
                    for task in inflight:
                        task.cancel()
                await asyncio.wait(set(inflight))


def _timer_of(doc: Mapping[str, Any]) -> Timer:
    """Return the timer a claimed document holds (its version and attempts counted with the claim)."""
    return Timer(
        id=doc["_id"],
        kind=doc["kind"],
        due_at=doc["due_at"],
        payload=doc.get("payload", {}),
        group=doc.get("group"),
        attempts=doc["attempts"],
        version=doc["version"],
    )
