"""MongoDB access of the metrics service: per-ticket facts, KPI rollups and inspection reports.

Events are recorded a batch at a time, and every rollup bucket moves once per batch, exactly once:
1. the batch is registered in `batches` (a small collection: only batches in flight live there);
2. each ticket's facts document takes the batch's events (deduped by event id) and stores the rollup
   delta they cause as `pending.<batch id>`, in one version-guarded write;
3. the deltas are summed per bucket and each bucket gets one `$inc` that also sets the marker
   `applied.<batch id>`, guarded by that marker's absence, so a retry never counts twice;
4. the batch is removed.
A crash anywhere leaves the batch registered; recovery sums what is still pending for it and replays
steps 3 and 4, which the markers make harmless to repeat. A bucket's marker goes only once its batch is
removed, and with the bucket's next move (step 3 of a later batch), not by a write of its own: a marker
removed while its batch was still registered would let recovery count that bucket twice. So a bucket
holds the markers of the batches in flight and of the last one each process finished, and a marker
left by a process that stopped is cleared at the next start (`recover_batches`). A facts document holds
the pending entries of its last batch at most: those of finished batches are removed by the subject's
next write (step 2), not by a write of their own. A finished batch is one this process finished, or one
`batches` no longer holds (a pending entry or a marker is written only after its batch was registered,
and the batch is deleted only once its buckets moved); an entry whose batch is still registered is left
for recovery.
`service.Recording` runs these steps; what a batch changes in each document is decided in
`domain.fold_subject`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from pymongo.errors import DuplicateKeyError

from aftersales.metrics.domain import DeadlineChanges, SubjectFacts
from aftersales.metrics.facts import Facts
from aftersales.metrics.overdue_store import OverdueCounter
from aftersales.metrics.rollups import ALLTIME, CURRENT, Contribution, sum_changes
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events

FACTS = "facts"
ROLLUPS = "rollups"
REPORTS = "reports"
BATCHES = "batches"
DEADLINES = "deadlines"
FINISHED_KEPT = 4096  # ids of batches this process finished, remembered to clear their pending entries
WALK_BATCH = 2000  # documents per round trip when the open deadlines are walked (fewer getMore calls)
INDEXES = [
    IndexSpec(ROLLUPS, [("day", 1)]),
]


def _esc(part: str) -> str:
    return quote(part, safe="").replace(".", "%2E")


def _path(bucket: str, key: str) -> str:
    if bucket == ALLTIME:
        series, _, labels = key.partition("|")
        return f"s.{_esc(series)}.{_esc(labels)}"
    dim, rest = key.split("|", 1)
    value, counter = rest.rsplit("|", 1)
    return f"k.{_esc(dim)}.{_esc(value)}.{_esc(counter)}"


def _as_paths(change: Contribution) -> Contribution:
    """Return a delta as it is stored and applied: bucket -> stored counter path -> amount."""
    return {
        bucket: {_path(bucket, key): n for key, n in sorted(counters.items())}
        for bucket, counters in change.items()
    }


def _entries(paths: Contribution) -> list[dict[str, Any]]:
    """Return a delta in stored paths as the list kept in `pending.<batch id>` of a facts document."""
    return [
        {"bucket": b, "inc": [{"path": p, "n": n} for p, n in inc.items()]}
        for b, inc in sorted(paths.items())
    ]


def _from_entries(entries: Sequence[Mapping[str, Any]]) -> Contribution:
    """Return the delta in stored paths that `_entries` wrote."""
    return {e["bucket"]: {i["path"]: i["n"] for i in e["inc"]} for e in entries}


class MetricsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.facts = db[FACTS]
        self.rollups = db[ROLLUPS]
        self.reports = db[REPORTS]
        self.batches = db[BATCHES]
        self.deadlines = db[DEADLINES]
        self.overdue_counter = OverdueCounter(db, self.deadlines)
        self._finished: dict[str, None] = {}  # insertion-ordered: the oldest are forgotten first
        self._open: set[str] = set()  # batches this process registered and has not finished
        self._markers = BatchMarkers()

    # ------------------------------------------------------------ facts documents (step 2)

    async def load_facts(self, subject: str) -> SubjectFacts:
        """Return the facts document of a subject (empty facts when there is none yet)."""
        doc = await self.facts.find_one({"_id": subject})
        if doc is None:
            return SubjectFacts(subject, Facts(subject=subject))
        return SubjectFacts(
            subject,
            Facts.model_validate(doc["facts"]),
            applied_events=tuple(doc.get("applied_events", [])),
            version=doc.get("version", 0),
            pending_batches=tuple(doc.get("pending") or ()),
        )

    async def write_facts(self, before: SubjectFacts, after: SubjectFacts, batch_id: str) -> bool:
        """Write the folded facts with their rollup delta pending for `batch_id`, guarded by the version
        `before` was read at; return False when that guard was lost. The open deadlines are written ahead."""
        await self._track_deadlines(after.deadlines)
        fields: dict[str, Any] = {"facts": after.facts.to_document(), "updated_at": datetime.now(UTC)}
        pending = {batch_id: _entries(_as_paths(after.rollup_delta))} if after.rollup_delta else {}
        ids = list(after.applied_events[len(before.applied_events) :])
        if before.version is None:
            first = {"_id": after.subject, "version": 1, "applied_events": ids, "pending": pending, **fields}
            try:
                await self.facts.insert_one(first)
            except DuplicateKeyError:
                return False
            return True
        update: dict[str, Any] = {
            "$set": {**fields, **{f"pending.{k}": v for k, v in pending.items()}},
            "$inc": {"version": 1},
            "$push": {"applied_events": {"$each": ids}},
        }
        finished = await self._finished_of([b for b in before.pending_batches if b != batch_id])
        if finished:
            update["$unset"] = {f"pending.{b}": "" for b in finished}
        result = await self.facts.update_one({"_id": after.subject, "version": before.version}, update)
        return result.modified_count == 1

    async def _finished_of(self, batch_ids: Sequence[str]) -> list[str]:
        """Return which of these batches are finished: this process finished them, or `batches` no longer
        holds them (read by `_id`, only for batches another process or an earlier life ran; a batch
        this process is still finishing is not)."""
        finished = []
        for batch_id in batch_ids:
            if batch_id in self._open:
                continue  # still being finished here (a batch of another topic, at the same time)
            if batch_id not in self._finished:
                if await self.batches.find_one({"_id": batch_id}, {"_id": 1}) is not None:
                    continue  # in flight elsewhere, or left by a crash: recovery needs its entry
                self._remember_finished(batch_id)
            finished.append(batch_id)
        return finished

    def _remember_finished(self, batch_id: str) -> None:
        self._finished[batch_id] = None
        while len(self._finished) > FINISHED_KEPT:
            del self._finished[next(iter(self._finished))]

    async def _track_deadlines(self, changes: DeadlineChanges) -> None:
        """Write the open deadlines that changed and move the overdue counts they are in. Each write
        returns the document it replaced, so a redelivered fold moves no count twice."""
        for key in changes.closed:
            before = await self.deadlines.find_one_and_delete({"_id": key})
            await self.overdue_counter.track(before, None)
        for key, doc in changes.opened.items():
            after = {**doc, "counted": True}
            before = await self.deadlines.find_one_and_replace({"_id": key}, after, upsert=True)
            await self.overdue_counter.track(before, after)

    async def overdue_counts(self, now: datetime | None = None) -> dict[str, int]:
        """Return how many complaints and follow-ups are past their deadline (reads by `_id` only)."""
        return await self.overdue_counter.counts(now)

    # ------------------------------------------------------------ batches (steps 1, 3 and 4)

    async def open_batch(self, batch_id: str, subjects: Sequence[str]) -> None:
        self._open.add(batch_id)
        await self.batches.insert_one({"_id": batch_id, "subjects": list(subjects), "at": datetime.now(UTC)})

    async def finish_batch(self, batch_id: str, changes: Sequence[Contribution]) -> None:
        """Apply the deltas the batch's subjects hold pending for it (`changes`), then clear up."""
        await self._finish_batch(batch_id, [_as_paths(c) for c in changes])

    async def _finish_batch(self, batch_id: str, pending: Sequence[Contribution]) -> None:
        """Steps 3 and 4: move each bucket once, then remove the batch (its markers go with each bucket's
        next move, the subjects' pending entries with their next write: see the module's docstring).

        `pending` holds the subjects' deltas in stored paths (bucket -> counter path -> amount)."""
        incs = sum_changes(pending)
        for bucket, paths in sorted(incs.items()):
            await self._markers.apply(self.rollups, batch_id, bucket, paths)
        await self.batches.delete_one({"_id": batch_id})
        self._markers.spent(batch_id, incs)
        self._remember_finished(batch_id)
        self._open.discard(batch_id)

    async def recover_batches(self, *, in_flight: Collection[str] = (), min_age_s: float = 30.0) -> int:
        """Finish batches a crash left registered (older than `min_age_s`, not `in_flight` here); return how
        many."""
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=min_age_s)
        stale = [b async for b in self.batches.find({}) if b["_id"] not in in_flight and b["at"] < cutoff]
        for batch in stale:
            pending: list[Contribution] = []
            for subject in batch.get("subjects", []):
                doc = await self.facts.find_one({"_id": subject}, {f"pending.{batch['_id']}": 1})
                entries = ((doc or {}).get("pending") or {}).get(batch["_id"])
                if entries:
                    pending.append(_from_entries(entries))
            await self._finish_batch(batch["_id"], pending)
        if not self._markers.swept:
            await self._markers.sweep(self.rollups, self.batches, now, in_flight=self._open)
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
        out: dict[str, list[dict[str, Any]]] = {"complaints": [], "followups": []}
        async for d in self.deadlines.find({}).batch_size(WALK_BATCH):
            if d["due_at"] < now:
                kind, item = _overdue_item(d, now)
                out[kind].append(item)
        return out

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


class BatchMarkers:
    """The `applied.<batch id>` markers of the rollup buckets (steps 3 and 4 of the module's docstring):
    a bucket moves once per batch, and a finished batch's marker goes with the bucket's next move."""

    def __init__(self) -> None:
        # bucket -> batches finished here whose marker on that bucket goes with the bucket's next move
        self._spent: dict[str, set[str]] = {}
        self.swept = False  # the markers a stopped process left are cleared once, at start

    def spent(self, batch_id: str, buckets: Collection[str]) -> None:
        """Record that a batch is finished (no longer registered): its markers may go."""
        for bucket in buckets:
            self._spent.setdefault(bucket, set()).add(batch_id)

    def owed(self) -> set[str]:
        """The batches whose markers this process still removes with a bucket's next move."""
        return set().union(*self._spent.values())

    async def apply(self, rollups: Any, batch_id: str, bucket: str, inc: Mapping[str, int]) -> None:
        """Move a bucket by a batch's delta unless it carries the batch's marker; clear spent markers."""
        seed: dict[str, Any] = {"kind": "day" if bucket.startswith("d:") else bucket}
        if bucket.startswith("d:"):
            seed["day"] = bucket[2:]
        spent = sorted(self._spent.get(bucket, ()))
        guard = {"_id": bucket, f"applied.{batch_id}": {"$exists": False}}
        update: dict[str, Any] = {"$inc": inc, "$set": {f"applied.{batch_id}": True}}
        if spent:
            update["$unset"] = {f"applied.{b}": "" for b in spent}
        try:
            result = await rollups.update_one(guard, {**update, "$setOnInsert": seed}, upsert=True)
        except DuplicateKeyError:
            # Either the bucket carries this batch's marker (applied before a crash) or another writer
            # created the bucket between our look and our insert: the guarded update (no upsert now
            # that the bucket exists) applies the delta in the second case and nothing in the first.
            result = await rollups.update_one(guard, update)
        if spent and (result.modified_count or result.upserted_id is not None):
            self._spent[bucket].difference_update(spent)

    async def sweep(self, rollups: Any, batches: Any, now: datetime, *, in_flight: Collection[str]) -> None:
        """Clear the markers a stopped process left on the buckets written from now on (the current and
        all-time buckets, the days around today): each names a batch that is no longer registered."""
        days = {(now + timedelta(days=d)).date().isoformat() for d in (-1, 0, 1)}
        for bucket in [CURRENT, ALLTIME, *(f"d:{d}" for d in sorted(days))]:
            doc = await rollups.find_one({"_id": bucket}, {"applied": 1})
            left = [
                b
                for b in (doc or {}).get("applied") or {}
                if b not in in_flight and await batches.find_one({"_id": b}, {"_id": 1}) is None
            ]
            if left:
                await rollups.update_one({"_id": bucket}, {"$unset": {f"applied.{b}": "" for b in left}})
        self.swept = True


def _decode_values(raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    return {unquote(v): {unquote(k): int(n) for k, n in counters.items()} for v, counters in raw.items()}


def _overdue_item(d: Mapping[str, Any], now: datetime) -> tuple[str, dict[str, Any]]:
    """Return the list an overdue deadline document belongs to ("complaints", "followups") and its item."""
    base = {"ticket_id": d.get("ticket_id"), "grid": d.get("grid")}
    overdue_s = (now - d["due_at"]).total_seconds()
    if d["kind"] == "complaint":
        return "complaints", {
            "complaint_id": d["item_id"],
            **base,
            "deadline_at": d["due_at"],
            "overdue_s": overdue_s,
        }
    return "followups", {
        "visit_id": d["item_id"],
        **base,
        "kind": d["visit_kind"],
        "due_at": d["due_at"],
        "overdue_s": overdue_s,
    }
