"""Intake's MongoDB access for PIPL data exports: the export requests (with their one-off private key and
their request events in the outbox) and the sealed answer parts the services send back.

Everything is reached by `_id`: a request by its export id, an answer part by
"<export id>:<service>:<chunk>:<part>", whose list is the request's `applied_events` (one marker per part
collected), so expiring an export deletes its parts one by one, without a query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import ExportAnswered
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.idempotency import apply_once
from aftersales.shared.outbox import new_with_events
from aftersales.shared.runtime import ServiceRuntime

EXPORT_REQUESTS = "export_requests"  # `_id` = export id: the request, its key, its events, the progress
EXPORT_PARTS = "export_parts"  # `_id` = "<export id>:<service>:<chunk>:<part>": one sealed answer part


def part_marker(answered: ExportAnswered) -> str:
    """The marker of an answer part on its request (and the tail of the part's `_id`)."""
    return f"{answered.service}:{answered.chunk}:{answered.part}"


class ExportStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.requests = runtime.db[EXPORT_REQUESTS]
        self.parts = runtime.db[EXPORT_PARTS]

    async def arm_expiry(self, export_id: str, kind: str, at: datetime) -> None:
        """Arm the durable timer that deletes the export's key and answers at `at`."""
        await self.runtime.timers.schedule(f"{export_id}:expiry", kind, at, {"export_id": export_id})

    async def add(self, doc: Mapping[str, Any], events: Sequence[CloudEvent]) -> None:
        """Record an export request with its events in the outbox (one write)."""
        await self.requests.insert_one(new_with_events(doc, Topic.PRIVACY, events))
        self.runtime.relay.notify(EXPORT_REQUESTS, doc["_id"])

    async def get(self, export_id: str) -> dict[str, Any] | None:
        """Return an export request (with its private key while it lasts), without its outbox."""
        return await self.requests.find_one({"_id": export_id}, {"outbox": 0})

    async def collect(self, answered: ExportAnswered) -> bool:
        """Keep an answer part and count it on its request, once; False for a part seen before. The part
        is written first, so a crash before the count only repeats the (idempotent) insert."""
        marker = part_marker(answered)
        part = {
            "_id": f"{answered.export_id}:{marker}",
            "export_id": answered.export_id,
            "service": answered.service,
            "chunk": answered.chunk,
            "part": answered.part,
            "counts": dict(answered.counts),
            "sealed": answered.sealed,
            "answered_at": answered.answered_at,
        }
        try:
            await self.parts.insert_one(part)
        except DuplicateKeyError:
            pass  # a redelivery: the count below decides
        progress = f"progress.{answered.service}"
        inc: dict[str, int] = {f"{progress}.parts_in": 1}
        if answered.part == 0:
            inc[f"{progress}.chunks_in"] = 1
            inc[f"{progress}.parts_due"] = answered.parts
        for kind, n in answered.counts.items():
            inc[f"{progress}.counts.{kind}"] = int(n)
        return await apply_once(
            self.requests,
            answered.export_id,
            marker,
            {"$inc": inc},
            extra_filter={"expired_at": None},
        )

    async def forget_part(self, export_id: str, marker: str) -> None:
        await self.parts.delete_one({"_id": f"{export_id}:{marker}"})

    async def part(self, export_id: str, marker: str) -> dict[str, Any] | None:
        return await self.parts.find_one({"_id": f"{export_id}:{marker}"})

    async def expire(self, export_id: str, now: datetime) -> list[str]:
        """Mark an export expired and drop its private key (answers arriving later are refused); return
        the markers of its parts, to delete them."""
        doc = await self.requests.find_one_and_update(
            {"_id": export_id},
            {"$set": {"expired_at": now, "status": "expired"}, "$unset": {"private_key": ""}},
            projection={"applied_events": 1},
        )
        return list((doc or {}).get("applied_events", []))
