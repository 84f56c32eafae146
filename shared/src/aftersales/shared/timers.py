"""Durable timers: SLA warnings and breaches, follow-up due times, complaint deadlines.

A timer is a document with a `due_at` and an index. A sweeper claims due timers with an atomic
conditional update (a lease), calls the service's handler, and marks the timer done. A restart loses no
timer (it is a document) and a timer whose handler crashed is claimed again when its lease runs out;
handlers write their effect with `apply_once(..., event_id=timer id)`, so a re-fire changes nothing.
Several replicas never fire one timer at the same time: only one wins the claim.

Schedule a timer *before* the state change it belongs to; a handler checks the aggregate's state and
does nothing when the change never happened, so a crash between the two writes is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Database, IndexSpec

log = logging.getLogger("aftersales.timers")

TIMERS_FIRED = Counter("aftersales_timers_fired_total", "Durable timers fired", ["kind"])
TIMER_FAILURES = Counter("aftersales_timer_failures_total", "Timer handler failures", ["kind"])

COLLECTION = "timers"
MAX_ATTEMPTS = 10
TIMER_INDEXES = [IndexSpec(COLLECTION, [("state", 1), ("due_at", 1)]), IndexSpec(COLLECTION, [("group", 1)])]


@dataclass(frozen=True, slots=True)
class Timer:
    id: str
    kind: str
    due_at: datetime
    payload: Mapping[str, Any]
    group: str | None
    attempts: int


TimerHandler = Callable[[Timer], Awaitable[None]]


class DurableTimers:
    """Schedule, cancel and fire timers stored in the service's own database."""

    def __init__(self, db: Database, *, lease_s: float = 60.0, poll_interval_s: float = 1.0) -> None:
        self._col = db[COLLECTION]
        self._lease = timedelta(seconds=lease_s)
        self._poll_interval_s = poll_interval_s
        self._owner = uuid.uuid4().hex

    async def schedule(
        self,
        timer_id: str,
        kind: str,
        due_at: datetime,
        payload: Mapping[str, Any] | None = None,
        *,
        group: str | None = None,
    ) -> None:
        """Create the timer, or move a still-pending one to a new due time (a done timer stays done)."""
        if due_at.tzinfo is None:
            raise ValueError("due_at must be timezone-aware")
        fields = {"kind": kind, "due_at": due_at, "payload": dict(payload or {}), "group": group}
        result = await self._col.update_one({"_id": timer_id, "state": "pending"}, {"$set": fields})
        if result.matched_count:
            return
        existing = await self._col.find_one({"_id": timer_id}, {"state": 1})
        if existing is None:
            try:
                await self._col.insert_one(
                    {
                        "_id": timer_id,
                        **fields,
                        "state": "pending",
                        "attempts": 0,
                        "lease_until": None,
                        "created_at": datetime.now(UTC),
                    }
                )
            except DuplicateKeyError:
                pass  # a concurrent schedule of the same id won; that is the same timer

    async def cancel(self, timer_id: str) -> bool:
        """Cancel a pending timer; return True if it was pending."""
        result = await self._col.update_one(
            {"_id": timer_id, "state": "pending"}, {"$set": {"state": "cancelled"}}
        )
        return result.modified_count == 1

    async def cancel_group(self, group: str) -> int:
        """Cancel every pending timer of a group (e.g. all SLA timers of one work order)."""
        result = await self._col.update_many(
            {"group": group, "state": "pending"}, {"$set": {"state": "cancelled"}}
        )
        return result.modified_count

    async def get(self, timer_id: str) -> dict[str, Any] | None:
        return await self._col.find_one({"_id": timer_id})

    async def claim_due(self, now: datetime | None = None) -> Timer | None:
        """Claim the most overdue timer (or one whose lease ran out); return it, or None."""
        now = now or datetime.now(UTC)
        doc = await self._col.find_one_and_update(
            {
                "$or": [
                    {"state": "pending", "due_at": {"$lte": now}},
                    {"state": "running", "lease_until": {"$lt": now}},
                ]
            },
            {
                "$set": {"state": "running", "lease_until": now + self._lease, "owner": self._owner},
                "$inc": {"attempts": 1},
            },
            sort=[("due_at", 1)],
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return Timer(
            id=doc["_id"],
            kind=doc["kind"],
            due_at=doc["due_at"],
            payload=doc.get("payload", {}),
            group=doc.get("group"),
            attempts=doc.get("attempts", 1),
        )

    async def fire_due(self, handler: TimerHandler, *, now: datetime | None = None, limit: int = 1000) -> int:
        """Fire up to `limit` due timers through `handler`; return how many completed."""
        fired = 0
        for _ in range(limit):
            timer = await self.claim_due(now)
            if timer is None:
                break
            try:
                await handler(timer)
            except Exception as exc:
                TIMER_FAILURES.labels(timer.kind).inc()
                state = "failed" if timer.attempts >= MAX_ATTEMPTS else "pending"
                retry_at = datetime.now(UTC) + timedelta(seconds=min(2**timer.attempts, 300))
                await self._col.update_one(
                    {"_id": timer.id, "owner": self._owner},
                    {
                        "$set": {
                            "state": state,
                            "due_at": retry_at,
                            "lease_until": None,
                            "last_error": repr(exc)[:500],
                        }
                    },
                )
                log.exception(
                    "timer handler failed", extra={"timer_kind": timer.kind, "attempts": timer.attempts}
                )
                continue
            await self._col.update_one(
                {"_id": timer.id, "owner": self._owner},
                {"$set": {"state": "done", "fired_at": datetime.now(UTC), "lease_until": None}},
            )
            TIMERS_FIRED.labels(timer.kind).inc()
            fired += 1
        return fired

    async def run(self, handler: TimerHandler, stop: asyncio.Event) -> None:
        """Sweep for due timers until `stop` is set."""
        while not stop.is_set():
            try:
                await self.fire_due(handler)
            except Exception:
                log.exception("timer sweep failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._poll_interval_s)
