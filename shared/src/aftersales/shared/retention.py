"""Retention (PIPL 个人信息保护法): personal data older than its kind's period is pseudonymised, on a
schedule, by the service holding it, with the same code its erasure uses.

No query looks for old records (FerretDB would scan the history). A record is *armed* when a service
stores or refreshes its personal data: it joins the bucket of its due time (activity + period, rounded
up to the bucket's end), a list of record ids in pages of `PAGE_RECORDS` (`retention_buckets`,
`<kind>:<bucket>:p<n>`, counted by `<kind>:<bucket>`), and each page has one durable timer due at the
bucket's end. The timers collection thus holds one timer per page (not one per record), so the timer
scans stay as small as the pages still to come.

Arming is batched (`arm_many`): a batch of records costs one counter update per bucket and, per page it
touches, one timer upsert and one `$push` — whatever the batch size (intake arms from its own ticket
stream, in batches, off the request path). A record armed twice is on two pages; that costs a repeated
check, never a repeated change: pseudonymising is idempotent and guarded by the record's last activity.

When a page's timer fires, each record on it is pseudonymised if its last activity is older than the
period (the service's `activity` and `pseudonymise`, the latter guarded against a change meanwhile); a
record touched since is armed again at its new due time (once per bucket: the marker `retention`,
`<kind>:<record id>`, names the bucket it was last re-armed in). Everything is read and written by `_id`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from pymongo import ReturnDocument

from aftersales.shared.runtime import ServiceRuntime
from aftersales.shared.timers import Timer

log = logging.getLogger("aftersales.retention")

RETENTION = "retention"  # `<kind>:<record id>`: the bucket the record is armed in
RETENTION_BUCKETS = "retention_buckets"  # `<kind>:<bucket>`: its record count; `…:p<n>`: a page of ids
RETENTION_TIMER = "retention"  # the timer kind (stored with each timer: do not rename)
PAGE_RECORDS = 200
MAX_BUCKET = timedelta(days=1)
MIN_BUCKET = timedelta(seconds=1)
BUCKETS_PER_PERIOD = 32  # a record is pseudonymised at most period / 32 (and at most a day) late

PSEUDONYMISED = Counter(
    "aftersales_retention_pseudonymised_total",
    "Records whose personal data was pseudonymised because it outlived its retention period",
    ["service", "kind"],
)

# `activity(record_id)`: when the record's personal data was last stored or touched; None when it holds
# none (gone, or pseudonymised before).
Activity = Callable[[str], Awaitable[datetime | None]]
# `pseudonymise(record_id, active_until)`: pseudonymise the record if it has not changed since
# `active_until` (one guarded write, the service's erasure code); True when it did.
Pseudonymise = Callable[[str, datetime], Awaitable[bool]]


def retention_period(days: float) -> timedelta | None:
    """Return a kind's period from its setting in days (0: kept without limit, None)."""
    return timedelta(days=days) if days > 0 else None


def bucket_width(period: timedelta) -> timedelta:
    """Return the width of a kind's buckets: a 32nd of its period, between a second and a day."""
    return max(MIN_BUCKET, min(MAX_BUCKET, period / BUCKETS_PER_PERIOD))


def bucket_end(due: datetime, width: timedelta) -> int:
    """Return the end (Unix seconds) of the bucket holding `due`: the bucket fires when it has passed."""
    step = width.total_seconds()
    return int(math.ceil(due.timestamp() / step) * step)


@dataclass(frozen=True, slots=True)
class RetentionKind:
    name: str
    period: timedelta | None  # None: kept without limit
    activity: Activity
    pseudonymise: Pseudonymise

    async def expire(self, record_id: str, older_than: datetime) -> bool | datetime:
        """Pseudonymise the record if it was last active at or before `older_than`: True when it was,
        False when it holds nothing to pseudonymise, or its last activity when that is later (kept)."""
        last = await self.activity(record_id)
        if last is None:
            return False
        if last > older_than:
            return last
        if await self.pseudonymise(record_id, older_than):
            return True
        return await self.activity(record_id) or False  # changed meanwhile: armed again, or gone


class Retention:
    """A service's retention schedule: its kinds of personal data, each with a period and the function
    that pseudonymises one record of it (the one the service's erasure uses too)."""

    def __init__(self, runtime: ServiceRuntime, *, service: str) -> None:
        self.runtime = runtime
        self.service = service
        self.kinds: dict[str, RetentionKind] = {}
        self.markers = runtime.db[RETENTION]
        self.buckets = runtime.db[RETENTION_BUCKETS]
        runtime.on_timer(RETENTION_TIMER, self.on_timer)

    def kind(self, name: str, *, days: float, activity: Activity, pseudonymise: Pseudonymise) -> None:
        """Declare a kind of personal data kept `days` (0: without limit) after its last activity."""
        if name in self.kinds or ":" in name:
            raise ValueError(f"retention kind {name!r} is declared twice or has a colon")
        self.kinds[name] = RetentionKind(name, retention_period(days), activity, pseudonymise)

    async def arm(self, kind: str, record_id: str, last_activity: datetime) -> None:
        """Schedule the record's pseudonymisation at `last_activity` + the kind's period."""
        await self.arm_many(kind, [(record_id, last_activity)])

    async def arm_many(self, kind: str, records: Sequence[tuple[str, datetime]]) -> None:
        """Schedule each record's pseudonymisation at its last activity + the kind's period (nothing when
        the kind is kept without limit): one counter update per bucket, one timer and one push per page."""
        period = self.kinds[kind].period
        if period is None or not records:
            return
        width = bucket_width(period)
        now = datetime.now(UTC)
        by_bucket: dict[int, list[str]] = {}
        for record_id, last_activity in records:
            due = max(last_activity + period, now)  # a late arm joins a bucket still to come
            by_bucket.setdefault(bucket_end(due, width), []).append(record_id)
        for bucket, ids in sorted(by_bucket.items()):
            await self._add_to_bucket(kind, bucket, list(dict.fromkeys(ids)))

    async def _rearm(self, kind: str, record_id: str, last_activity: datetime) -> None:
        """Arm a record found active since it was armed, once per bucket (its marker says where)."""
        period = self.kinds[kind].period
        if period is None:
            return
        bucket = bucket_end(max(last_activity + period, datetime.now(UTC)), bucket_width(period))
        marker_id = f"{kind}:{record_id}"
        marker = await self.markers.find_one({"_id": marker_id}, {"bucket": 1})
        if marker is not None and int(marker["bucket"]) >= bucket:
            return
        await self._add_to_bucket(kind, bucket, [record_id])
        await self.markers.update_one({"_id": marker_id}, {"$set": {"bucket": bucket}}, upsert=True)

    async def _add_to_bucket(self, kind: str, bucket: int, record_ids: Sequence[str]) -> None:
        """Put the record ids on the bucket's pages (slots counted by the bucket's counter); each page's
        timer is armed before its ids are pushed (idempotent by `_id`), so a crash in between leaves a
        timer with a page to read, never a page without one."""
        counted = await self.buckets.find_one_and_update(
            {"_id": f"{kind}:{bucket}"},
            {"$inc": {"records": len(record_ids)}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        first = int((counted or {}).get("records", len(record_ids))) - len(record_ids)
        pages: dict[int, list[str]] = {}
        for slot, record_id in enumerate(record_ids, start=first):
            pages.setdefault(slot // PAGE_RECORDS, []).append(record_id)
        for page, ids in pages.items():
            page_id = f"{kind}:{bucket}:p{page}"
            await self.runtime.timers.schedule(
                f"{RETENTION_TIMER}:{page_id}",
                RETENTION_TIMER,
                datetime.fromtimestamp(bucket, UTC),
                {"kind": kind, "bucket": bucket, "page": page},
            )
            await self.buckets.update_one({"_id": page_id}, {"$push": {"ids": {"$each": ids}}}, upsert=True)

    async def on_timer(self, timer: Timer) -> None:
        """A page's bucket has passed: expire each of its records still armed in it, then drop the page.
        The cut-off is the timer's due time, so a replayed or late firing decides as the first would."""
        kind_name, bucket, page = (
            str(timer.payload["kind"]),
            int(timer.payload["bucket"]),
            timer.payload["page"],
        )
        page_id = f"{kind_name}:{bucket}:p{page}"
        kind = self.kinds.get(kind_name)
        doc = await self.buckets.find_one({"_id": page_id})
        if kind is not None and kind.period is not None and doc is not None:
            older_than = timer.due_at - kind.period
            for record_id in dict.fromkeys(doc.get("ids") or []):
                await self._expire(kind, bucket, str(record_id), older_than)
        await self.buckets.delete_one({"_id": page_id})

    async def _expire(self, kind: RetentionKind, bucket: int, record_id: str, older_than: datetime) -> None:
        outcome = await kind.expire(record_id, older_than)
        if isinstance(outcome, datetime):
            await self._rearm(kind.name, record_id, outcome)
            return
        if outcome:
            PSEUDONYMISED.labels(self.service, kind.name).inc()
            log.info("personal data pseudonymised", extra={"kind": kind.name, "record_id": record_id})
        # A re-arm marker of this bucket (or an older one) has done its work.
        await self.markers.delete_one({"_id": f"{kind.name}:{record_id}", "bucket": {"$lte": bucket}})
