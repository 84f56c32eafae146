"""MongoDB access of the metrics service: per-ticket facts, KPI rollups and inspection reports.

Recording an event is one optimistic update of the ticket's facts document that stores the new facts,
the event id (dedupe) and the rollup delta it causes as a pending entry, all at once. The pending delta
is then applied to each rollup bucket with `apply_once` keyed by the delta id and removed; a crash in
between leaves it pending, and the sweeper (or the next event of that ticket) applies it. So a rollup
moves exactly once per fact change, even on redelivery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from aftersales.metrics.facts import Facts, fold
from aftersales.metrics.rollups import ALLTIME, CURRENT, Contribution, contribution, delta
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.idempotency import apply_once
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events

log = logging.getLogger("aftersales.metrics")

FACTS = "facts"
ROLLUPS = "rollups"
REPORTS = "reports"
INDEXES = [
    IndexSpec(FACTS, [("has_pending", 1)]),
    IndexSpec(FACTS, [("open_complaint_deadlines", 1)]),
    IndexSpec(FACTS, [("open_visit_dues", 1)]),
    IndexSpec(ROLLUPS, [("day", 1)]),
]
MAX_WRITE_ATTEMPTS = 20


class WriteConflict(Exception):
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

    # ------------------------------------------------------------ recording events

    async def record(self, subject: str, event_id: str, data: BaseModel) -> bool:
        """Fold one event into its facts document; return False when it was already applied."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            doc = await self.facts.find_one({"_id": subject})
            if doc is not None and event_id in doc.get("applied_events", []):
                await self.flush(subject)
                return False
            old = Facts.model_validate(doc["facts"]) if doc else Facts(subject=subject)
            new = fold(old, data)
            change = delta(contribution(old, self.zone), contribution(new, self.zone))
            fields: dict[str, Any] = {"facts": new.to_document(), **_index_fields(new)}
            pending = {uuid.uuid4().hex: _entries(change)} if change else {}
            if doc is None:
                first = {"_id": subject, "version": 1, "applied_events": [event_id], **fields}
                try:
                    await self.facts.insert_one({**first, "pending": pending, "has_pending": bool(pending)})
                except DuplicateKeyError:
                    continue
            else:
                applied = await apply_once(
                    self.facts,
                    subject,
                    event_id,
                    {"$set": {**fields, **_pending_fields(pending)}, "$inc": {"version": 1}},
                    extra_filter={"version": doc.get("version", 0)},
                )
                if not applied:
                    continue
            await self.flush(subject)
            return True
        raise WriteConflict(
            f"facts of {subject} changed {MAX_WRITE_ATTEMPTS} times while applying {event_id}"
        )

    async def flush(self, subject: str) -> None:
        """Apply the pending rollup deltas of one facts document, each exactly once."""
        doc = await self.facts.find_one({"_id": subject}, {"pending": 1, "version": 1})
        if not doc or not doc.get("pending"):
            return
        for delta_id, entries in sorted(doc["pending"].items()):
            for entry in entries:
                await self._apply_delta(delta_id, entry["bucket"], entry["inc"])
            await self.facts.update_one({"_id": subject}, {"$unset": {f"pending.{delta_id}": ""}})
        await self.facts.update_one(
            {"_id": subject, "version": doc["version"]}, {"$set": {"has_pending": False}}
        )

    async def _apply_delta(self, delta_id: str, bucket: str, inc: list[dict[str, Any]]) -> None:
        try:
            seed: dict[str, Any] = {"kind": "day" if bucket.startswith("d:") else bucket}
            if bucket.startswith("d:"):
                seed["day"] = bucket[2:]
            await self.rollups.update_one({"_id": bucket}, {"$setOnInsert": seed}, upsert=True)
        except DuplicateKeyError:
            pass  # created concurrently: it exists now, which is all we need
        await apply_once(self.rollups, bucket, delta_id, {"$inc": {i["path"]: i["n"] for i in inc}})

    async def flush_all_pending(self, limit: int = 500) -> int:
        """Apply deltas left pending by a crash; return how many facts documents were flushed."""
        count = 0
        async for doc in self.facts.find({"has_pending": True}, {"_id": 1}).limit(limit):
            await self.flush(doc["_id"])
            count += 1
        return count

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
        """Return open complaints past their deadline and follow-ups past their due time, with their grid."""
        complaints: list[dict[str, Any]] = []
        visits: list[dict[str, Any]] = []
        query = {"$or": [{"open_complaint_deadlines": {"$lt": now}}, {"open_visit_dues": {"$lt": now}}]}
        async for doc in self.facts.find(query, {"facts": 1}).limit(5000):
            f = Facts.model_validate(doc["facts"])
            for c in f.complaints:
                if c.closed_at is None and c.deadline_at is not None and c.deadline_at < now:
                    complaints.append(
                        {
                            "complaint_id": c.complaint_id,
                            "ticket_id": _ticket_id(f),
                            "grid": f.grid,
                            "deadline_at": c.deadline_at,
                            "overdue_s": (now - c.deadline_at).total_seconds(),
                        }
                    )
            for v in f.visits:
                if not v.done and v.due_at is not None and v.due_at < now:
                    visits.append(
                        {
                            "visit_id": v.visit_id,
                            "ticket_id": _ticket_id(f),
                            "grid": f.grid,
                            "kind": v.kind,
                            "due_at": v.due_at,
                            "overdue_s": (now - v.due_at).total_seconds(),
                        }
                    )
        return {"complaints": complaints, "followups": visits}

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


def _pending_fields(pending: Mapping[str, Any]) -> dict[str, Any]:
    if not pending:
        return {}
    return {**{f"pending.{k}": v for k, v in pending.items()}, "has_pending": True}


def _index_fields(f: Facts) -> dict[str, Any]:
    return {
        "open_complaint_deadlines": sorted(
            c.deadline_at for c in f.complaints if c.closed_at is None and c.deadline_at is not None
        ),
        "open_visit_dues": sorted(v.due_at for v in f.visits if not v.done and v.due_at is not None),
        "updated_at": datetime.now(UTC),
    }
