"""MongoDB access of the metrics service: per-ticket facts, KPI rollups and inspection reports.

Events are recorded a batch at a time, and every rollup bucket moves once per batch, exactly once:
1. the batch is registered in `batches` (a small collection: only batches in flight live there);
2. each ticket's facts document takes the batch's events (deduped by event id) and stores the rollup
   delta they cause as `pending.<batch id>`, in one version-guarded write;
3. the deltas are summed per bucket and each bucket gets one `$inc` that also sets the marker
   `applied.<batch id>`, guarded by that marker's absence, so a retry never counts twice;
4. the `pending.<batch id>` entries are removed, then the markers, then the batch.
A crash anywhere leaves the batch registered; recovery sums what is still pending for it (all of it
until step 3 is complete) and replays steps 3 and 4, which the markers make harmless to repeat. No
document accumulates markers: a bucket holds those of the batches in flight only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.metrics.facts import Facts, fold
from aftersales.metrics.rollups import ALLTIME, CURRENT, Contribution, contribution, delta
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events

log = logging.getLogger("aftersales.metrics")

FACTS = "facts"
ROLLUPS = "rollups"
REPORTS = "reports"
BATCHES = "batches"
FOLD_CONCURRENCY = 16
DEADLINES = "deadlines"
INDEXES = [
    IndexSpec(ROLLUPS, [("day", 1)]),
]
MAX_WRITE_ATTEMPTS = 20


class WriteConflict(RetryLater):
    """The facts document kept changing under us; the consumer retries the event."""


def _esc(part: str) -> str:
    return quote(part, safe="").replace(".", "%2E")


def _path(bucket: str, key: str) -> str:
    if bucket == ALLTIME:
        series, _, labels = key.partition("|")
        return f"s.{_esc(series)}.{_esc(labels)}"
    dim, rest = key.split("|", 1)
    value, counter = rest.rsplit("|", 1)
    return f"k.{_esc(dim)}.{_esc(value)}.{_esc(counter)}"


def _entries(change: Contribution) -> list[dict[str, Any]]:
    return [
        {"bucket": b, "inc": [{"path": _path(b, k), "n": v} for k, v in sorted(c.items())]}
        for b, c in sorted(change.items())
    ]


class MetricsStore:
    def __init__(self, db: Database, zone: ZoneInfo) -> None:
        self.db = db
        self.zone = zone
        self.facts = db[FACTS]
        self.rollups = db[ROLLUPS]
        self.reports = db[REPORTS]
        self.batches = db[BATCHES]
        self.deadlines = db[DEADLINES]
        self._in_flight: set[str] = set()

    # ------------------------------------------------------------ recording events

    async def record(self, subject: str, event_id: str, data: BaseModel) -> None:
        """Fold one event into its facts document and the rollups (a batch of one)."""
        await self.record_batch([(subject, event_id, data)])

    async def record_batch(self, items: Sequence[tuple[str, str, BaseModel]]) -> None:
        """Fold a batch of (subject, event id, event) into facts and rollups, each bucket moved once."""
        by_subject: dict[str, list[tuple[str, BaseModel]]] = {}
        for subject, event_id, data in items:
            by_subject.setdefault(subject, []).append((event_id, data))
        batch_id = uuid.uuid4().hex
        self._in_flight.add(batch_id)
        try:
            subjects = sorted(by_subject)
            await self.batches.insert_one({"_id": batch_id, "subjects": subjects, "at": datetime.now(UTC)})
            gate = asyncio.Semaphore(FOLD_CONCURRENCY)

            async def fold_one(subject: str) -> Contribution:
                async with gate:
                    return await self._fold_subject(subject, by_subject[subject], batch_id)

            changes = await asyncio.gather(*(fold_one(s) for s in subjects))
            pending = [s for s, change in zip(subjects, changes, strict=True) if change]
            await self._finish_batch(batch_id, pending, _as_paths(_sum(changes)))
        finally:
            self._in_flight.discard(batch_id)

    async def _fold_subject(
        self, subject: str, events: Sequence[tuple[str, BaseModel]], batch_id: str
    ) -> Contribution:
        """Store the new facts of one subject and its rollup delta as pending; return the delta."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            doc = await self.facts.find_one({"_id": subject}, {"pending": 0})
            applied = set(doc.get("applied_events", [])) if doc else set()
            fresh = [(i, d) for i, d in events if i not in applied]
            if not fresh:
                return {}
            old = Facts.model_validate(doc["facts"]) if doc else Facts(subject=subject)
            new = old
            for _, data in fresh:
                new = fold(new, data)
            change = delta(contribution(old, self.zone), contribution(new, self.zone))
            await self._track_deadlines(old, new)
            fields: dict[str, Any] = {"facts": new.to_document(), "updated_at": datetime.now(UTC)}
            pending = {batch_id: _entries(change)} if change else {}
            ids = [i for i, _ in fresh]
            if doc is None:
                first = {"_id": subject, "version": 1, "applied_events": ids, "pending": pending, **fields}
                try:
                    await self.facts.insert_one(first)
                except DuplicateKeyError:
                    continue
                return change
            result = await self.facts.update_one(
                {"_id": subject, "version": doc.get("version", 0)},
                {
                    "$set": {**fields, **{f"pending.{k}": v for k, v in pending.items()}},
                    "$inc": {"version": 1},
                    "$push": {"applied_events": {"$each": ids}},
                },
            )
            if result.modified_count == 1:
                return change
        raise WriteConflict(f"facts of {subject} changed {MAX_WRITE_ATTEMPTS} times in batch {batch_id}")

    async def _finish_batch(self, batch_id: str, subjects: Sequence[str], incs: Contribution) -> None:
        """Steps 3 and 4: move each bucket once, then clear the pending deltas, markers and batch.

        `incs` is bucket -> stored counter path -> amount."""
        for bucket, paths in sorted(incs.items()):
            await self._apply_bucket(batch_id, bucket, paths)
        # One update per document, not one bulk command: FerretDB 1.x evaluates a many-statement update
        # far slower than the same statements sent one by one (each `{_id: X}` is its fast path).
        unset = {"$unset": {f"pending.{batch_id}": ""}}
        await asyncio.gather(*(self.facts.update_one({"_id": s}, unset) for s in subjects))
        for bucket in sorted(incs):
            await self.rollups.update_one({"_id": bucket}, {"$unset": {f"applied.{batch_id}": ""}})
        await self.batches.delete_one({"_id": batch_id})

    async def _apply_bucket(self, batch_id: str, bucket: str, inc: Mapping[str, int]) -> None:
        seed: dict[str, Any] = {"kind": "day" if bucket.startswith("d:") else bucket}
        if bucket.startswith("d:"):
            seed["day"] = bucket[2:]
        try:
            await self.rollups.update_one(
                {"_id": bucket, f"applied.{batch_id}": {"$exists": False}},
                {"$inc": inc, "$set": {f"applied.{batch_id}": True}, "$setOnInsert": seed},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # the bucket exists and carries this batch's marker: applied before a crash

    async def recover_batches(self, *, min_age_s: float = 30.0) -> int:
        """Finish batches a crash left registered (older than `min_age_s`); return how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=min_age_s)
        stale = [
            b async for b in self.batches.find({}) if b["_id"] not in self._in_flight and b["at"] < cutoff
        ]
        for batch in stale:
            subjects = list(batch.get("subjects", []))
            pending: list[Contribution] = []
            holders: list[str] = []
            for subject in subjects:
                doc = await self.facts.find_one({"_id": subject}, {f"pending.{batch['_id']}": 1})
                entries = ((doc or {}).get("pending") or {}).get(batch["_id"])
                if entries:
                    holders.append(subject)
                    pending.append({e["bucket"]: {i["path"]: i["n"] for i in e["inc"]} for e in entries})
            await self._finish_batch(batch["_id"], holders, _sum(pending))
        return len(stale)

    # ------------------------------------------------------------ reading rollups

    async def day_rollups(
        self, dimension: str, start: date, end: date
    ) -> list[tuple[date, dict[str, dict[str, int]]]]:
        """Return value -> counters of one dimension for each stored day in [start, end]."""
        out = []
        cursor = self.rollups.find(
            {"kind": "day", "day": {"$gte": start.isoformat(), "$lte": end.isoformat()}},
            {"day": 1, f"k.{dimension}": 1},
        )
        async for doc in cursor:
            out.append((date.fromisoformat(doc["day"]), _decode_values(doc.get("k", {}).get(dimension, {}))))
        return sorted(out, key=lambda x: x[0])

    async def current(self, dimension: str) -> dict[str, dict[str, int]]:
        doc = await self.rollups.find_one({"_id": CURRENT}, {f"k.{dimension}": 1})
        return _decode_values((doc or {}).get("k", {}).get(dimension, {}))

    async def alltime(self) -> dict[str, dict[tuple[str, ...], int]]:
        """Return series -> label tuple -> value, for the Prometheus exporter."""
        doc = await self.rollups.find_one({"_id": ALLTIME}, {"s": 1})
        out: dict[str, dict[tuple[str, ...], int]] = {}
        for series, labels in (doc or {}).get("s", {}).items():
            out[unquote(series)] = {tuple(unquote(k).split("|")): int(v) for k, v in labels.items()}
        return out

    async def overdue(self, now: datetime) -> dict[str, list[dict[str, Any]]]:
        """Return open complaints past their deadline and follow-ups past their due time, with their grid.

        Reads the `deadlines` collection, which holds only what is open (not the facts history)."""
        complaints: list[dict[str, Any]] = []
        visits: list[dict[str, Any]] = []
        async for d in self.deadlines.find({}):
            if d["due_at"] >= now:
                continue
            base = {"ticket_id": d.get("ticket_id"), "grid": d.get("grid")}
            if d["kind"] == "complaint":
                complaints.append(
                    {
                        "complaint_id": d["item_id"],
                        **base,
                        "deadline_at": d["due_at"],
                        "overdue_s": (now - d["due_at"]).total_seconds(),
                    }
                )
            else:
                visits.append(
                    {
                        "visit_id": d["item_id"],
                        **base,
                        "kind": d["visit_kind"],
                        "due_at": d["due_at"],
                        "overdue_s": (now - d["due_at"]).total_seconds(),
                    }
                )
        return {"complaints": complaints, "followups": visits}

    async def _track_deadlines(self, old: Facts, new: Facts) -> None:
        """Write ahead the open deadlines that changed between two versions of one subject's facts."""
        before, after = open_deadlines(old), open_deadlines(new)
        for key in before.keys() - after.keys():
            await self.deadlines.delete_one({"_id": key})
        for key, doc in after.items():
            if before.get(key) != doc:
                await self.deadlines.replace_one({"_id": key}, doc, upsert=True)

    async def ticket_facts(self, subject: str) -> Facts | None:
        doc = await self.facts.find_one({"_id": subject}, {"facts": 1})
        return Facts.model_validate(doc["facts"]) if doc else None

    # ------------------------------------------------------------ reports

    async def publish_report(self, report: Mapping[str, Any], event: CloudEvent) -> bool:
        """Store a published report with its event in one write; return False if it was published before."""
        try:
            await self.reports.insert_one(new_with_events(dict(report), Topic.REPORTS, [event]))
        except DuplicateKeyError:
            return False
        return True

    async def report(self, report_id: str) -> dict[str, Any] | None:
        return await self.reports.find_one(
            {"_id": report_id}, {"outbox": 0, "outbox_pending": 0, "outbox_lease": 0}
        )


def _ticket_id(f: Facts) -> str | None:
    return f.subject if f.is_ticket else None


def _decode_values(raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    return {unquote(v): {unquote(k): int(n) for k, n in counters.items()} for v, counters in raw.items()}


def _sum(changes: Sequence[Contribution]) -> Contribution:
    """Return the bucket-by-bucket sum of several deltas, without zero entries."""
    total: dict[str, dict[str, int]] = {}
    for change in changes:
        for bucket, counters in change.items():
            target = total.setdefault(bucket, {})
            for key, n in counters.items():
                target[key] = target.get(key, 0) + n
    return {b: {k: n for k, n in c.items() if n} for b, c in total.items() if any(c.values())}


def _as_paths(change: Contribution) -> Contribution:
    """Return bucket -> stored counter path -> amount."""
    return {
        bucket: {_path(bucket, key): n for key, n in counters.items()} for bucket, counters in change.items()
    }


def open_deadlines(f: Facts) -> dict[str, dict[str, Any]]:
    """Return the open complaint deadlines and follow-up due times of one subject, keyed for storage."""
    out: dict[str, dict[str, Any]] = {}
    for c in f.complaints:
        if c.closed_at is None and c.deadline_at is not None:
            out[f"complaint:{c.complaint_id}"] = {
                "kind": "complaint",
                "item_id": c.complaint_id,
                "due_at": c.deadline_at,
                "ticket_id": _ticket_id(f),
                "grid": f.grid,
            }
    for v in f.visits:
        if not v.done and v.due_at is not None:
            out[f"visit:{v.visit_id}"] = {
                "kind": "visit",
                "item_id": v.visit_id,
                "visit_kind": v.kind,
                "due_at": v.due_at,
                "ticket_id": _ticket_id(f),
                "grid": f.grid,
            }
    return out
