"""What every service holding personal data shares for PIPL requests: the erasure ledger (which chunks of
an erasure request a service applied, and its one confirmation, through the outbox) and the local copy of
customers' contact preferences (do-not-contact, consent to care calls).

Both are keyed by `_id` (the erasure id, the customer id): no query, no scan, on FerretDB too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import ContactPreferencesChanged, ErasureConfirmed, ErasureRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.idempotency import apply_once
from aftersales.shared.outbox import with_events
from aftersales.shared.runtime import ServiceRuntime

ERASURES = "erasures"  # one per erasure request a service applied: `_id` = the erasure id
CONTACT_PREFERENCES = "contact_preferences"  # one per customer: `_id` = the customer id
COUNT_PREFIX = "count_"


class ErasureLedger:
    """A service's record of the erasure requests it applied. Each chunk is applied once (its marker and
    its counts are one write); when every chunk is in, the confirmation goes into the same document's
    outbox, once. Erasing is idempotent by itself (a crash between it and the marker only repeats it).
    The collection must be among the runtime's outbox collections."""

    def __init__(self, runtime: ServiceRuntime, *, service: str) -> None:
        self.runtime = runtime
        self.service = service
        self.erasures = runtime.db[ERASURES]

    async def apply(
        self, request: ErasureRequested, erase: Callable[[], Awaitable[Mapping[str, int]]]
    ) -> None:
        """Erase a chunk's data with `erase` unless this chunk was applied before (a redelivery), record
        its counts with the chunk's marker, then confirm the request if every chunk is in."""
        marker = f"chunk:{request.chunk}"
        doc = await self.erasures.find_one({"_id": request.erasure_id}, {"applied_events": 1})
        if doc is None or marker not in doc.get("applied_events", []):
            counts = await erase()
            update: dict[str, Any] = {"$set": {"customer_id": request.customer_id, "chunks": request.chunks}}
            if counts:
                update["$inc"] = {f"{COUNT_PREFIX}{kind}": int(n) for kind, n in counts.items()}
            await apply_once(self.erasures, request.erasure_id, marker, update, upsert=True)
        await self._confirm_when_complete(request.erasure_id)

    async def _confirm_when_complete(self, erasure_id: str) -> None:
        doc = await self.erasures.find_one({"_id": erasure_id}, {"outbox": 0})
        if doc is None or doc.get("confirmed") or len(doc.get("applied_events", [])) < int(doc["chunks"]):
            return
        now = datetime.now(UTC)
        counts = {k.removeprefix(COUNT_PREFIX): int(v) for k, v in doc.items() if k.startswith(COUNT_PREFIX)}
        confirmed = ErasureConfirmed(
            erasure_id=erasure_id,
            customer_id=doc["customer_id"],
            service=self.service,
            counts=counts,
            confirmed_at=now,
        )
        event = new_event(confirmed, source=f"/aftersales/{self.service}", subject=doc["customer_id"])
        update = with_events({"$set": {"confirmed": True, "confirmed_at": now}}, Topic.PRIVACY, [event])
        result = await self.erasures.update_one({"_id": erasure_id, "confirmed": {"$ne": True}}, update)
        if result.modified_count == 1:
            self.runtime.relay.notify(ERASURES, erasure_id)


@dataclass(frozen=True, slots=True)
class ContactPreferences:
    """What a service may do to reach a customer (the default: everything the customer consented to)."""

    do_not_contact: bool = False
    care_calls: bool = True
    marketing: bool = False


class ContactPreferenceStore:
    """A service's copy of customers' contact preferences, from intake's id-only events."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.preferences = runtime.db[CONTACT_PREFERENCES]

    async def remember(self, changed: ContactPreferencesChanged) -> bool:
        """Keep the newest preferences of a customer (an older or repeated event changes nothing)."""
        doc = await self.preferences.find_one({"_id": changed.customer_id})
        if doc is not None and _aware(doc["changed_at"]) >= changed.changed_at:
            return False
        fields: dict[str, Any] = {
            "do_not_contact": changed.do_not_contact,
            "care_calls": changed.care_calls,
            "marketing": changed.marketing,
            "changed_at": changed.changed_at,
        }
        await self.preferences.update_one({"_id": changed.customer_id}, {"$set": fields}, upsert=True)
        return True

    async def of(self, customer_id: str | None) -> ContactPreferences:
        """Return a customer's preferences (the defaults when none were recorded)."""
        if customer_id is None:
            return ContactPreferences()
        doc = await self.preferences.find_one({"_id": customer_id})
        if doc is None:
            return ContactPreferences()
        return ContactPreferences(
            do_not_contact=bool(doc.get("do_not_contact")),
            care_calls=bool(doc.get("care_calls", True)),
            marketing=bool(doc.get("marketing")),
        )


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
