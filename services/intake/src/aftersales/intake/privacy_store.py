"""Intake's MongoDB access for personal-data rights (PIPL): erasure requests and their report, customers'
contact preferences (consent, do-not-contact), the access log of customers' contact data, and the
erasure of intake's own copy of a customer's personal data.

Everything is reached by `_id` except one list: the ids of a customer's tickets, read through the
`(customer_id, created_at)` index when an erasure is requested (a rare, administrator-started operation,
never a hot or periodic path), so that the other services find their documents by ticket id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from aftersales.intake.customer_records import CUSTOMERS
from aftersales.intake.store import TICKETS
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.pii import redact_pii
from aftersales.shared.runtime import ServiceRuntime

ERASURE_REQUESTS = "erasure_requests"  # `_id` = erasure id: the request, its events, the confirmations
PREFERENCES = "customer_preferences"  # `_id` = customer id: consents and the do-not-contact flag
ACCESS_LOG = "access_log"  # `<customer id>:p<page>`: pages of entries; `<customer id>` the counter
ACCESS_PAGE_ENTRIES = 50
ACCESS_PAGES_KEPT = 20  # the last 1,000 reads of a customer's contact data
ERASED_TEXT = "[erased]"
PROFILE_FIELDS = ("name", "phone", "email", "address")


class PrivacyStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.db = runtime.db

    # ------------------------------------------------------------ erasure requests

    async def customer_ticket_ids(self, customer_id: str, limit: int) -> list[str]:
        """Return the ids of a customer's tickets, newest first (through the customer_id index)."""
        return [ticket_id for ticket_id, _ in await self.customer_tickets(customer_id, limit)]

    async def customer_tickets(self, customer_id: str, limit: int) -> list[tuple[str, str | None]]:
        """Return the ids and `external_ref`s of a customer's tickets, newest first: a mail's ticket names
        the mail (`mail:<id>`) there."""
        cursor = self.db[TICKETS].find(
            {"customer_id": customer_id}, {"_id": 1, "external_ref": 1}, sort=[("created_at", -1)]
        )
        return [(doc["_id"], doc.get("external_ref")) async for doc in cursor.limit(limit)]

    async def add_erasure(self, doc: Mapping[str, Any], events: Sequence[CloudEvent]) -> None:
        """Record an erasure request with its events in the outbox (one write)."""
        await self.db[ERASURE_REQUESTS].insert_one(new_with_events(doc, Topic.PRIVACY, events))
        self.runtime.relay.notify(ERASURE_REQUESTS, doc["_id"])

    async def erasure(self, erasure_id: str) -> dict[str, Any] | None:
        return await self.db[ERASURE_REQUESTS].find_one({"_id": erasure_id}, {"outbox": 0})

    async def confirm(self, erasure_id: str, service: str, counts: Mapping[str, int], at: datetime) -> bool:
        """Record a service's confirmation (idempotent: the first one stays); False for an unknown request."""
        result = await self.db[ERASURE_REQUESTS].update_one(
            {"_id": erasure_id, f"confirmations.{service}": {"$exists": False}},
            {"$set": {f"confirmations.{service}": {"counts": dict(counts), "confirmed_at": at}}},
        )
        return result.matched_count == 1

    # ------------------------------------------------------------ intake's own personal data

    async def erase_customer(
        self, customer_id: str, now: datetime, *, active_until: datetime | None = None
    ) -> int:
        """Remove the contact data from the customer's record; 1 when there was a record to change. The
        version moves, so an edit holding an older read re-reads (the record's change log names fields,
        never their values). With `active_until` (retention), only a record unchanged since then."""
        update = {"$set": {"erased_at": now, **dict.fromkeys(PROFILE_FIELDS)}, "$inc": {"version": 1}}
        guard: dict[str, Any] = {"_id": customer_id}
        if active_until is not None:
            guard["updated_at"] = {"$lte": active_until}
        result = await self.db[CUSTOMERS].update_one(guard, update)
        return result.modified_count

    async def customer_activity(self, customer_id: str) -> datetime | None:
        """Return when the customer's record last changed (a ticket, an edit); None when it holds no
        contact data (no record, or erased)."""
        doc = await self.db[CUSTOMERS].find_one(
            {"_id": customer_id}, {"updated_at": 1, **dict.fromkeys(PROFILE_FIELDS, 1)}
        )
        if doc is None or not any(doc.get(f) for f in PROFILE_FIELDS):
            return None
        return doc.get("updated_at") or datetime.min.replace(tzinfo=UTC)

    async def ticket_activity(self, ticket_id: str) -> datetime | None:
        """Return when the ticket last changed; None when there is none or its text is erased."""
        doc = await self.db[TICKETS].find_one({"_id": ticket_id}, {"updated_at": 1, "description": 1})
        if doc is None or doc.get("description") == ERASED_TEXT:
            return None
        return doc.get("updated_at") or datetime.min.replace(tzinfo=UTC)

    async def erase_ticket_text(self, ticket_id: str, *, active_until: datetime | None = None) -> int:
        """Replace what the customer wrote on a ticket (title redacted, description erased); the version
        moves, so a writer holding an older read re-reads. 1 when the ticket was changed. With
        `active_until` (retention), only a ticket unchanged since then."""
        doc = await self.db[TICKETS].find_one({"_id": ticket_id}, {"title": 1, "description": 1})
        if doc is None or doc.get("description") == ERASED_TEXT:
            return 0
        fields = {"title": redact_pii(str(doc.get("title") or "")), "description": ERASED_TEXT}
        guard: dict[str, Any] = {"_id": ticket_id}
        if active_until is not None:
            guard["updated_at"] = {"$lte": active_until}
        result = await self.db[TICKETS].update_one(guard, {"$set": fields, "$inc": {"version": 1}})
        return result.modified_count

    # ------------------------------------------------------------ contact preferences

    async def preferences(self, customer_id: str) -> dict[str, Any] | None:
        return await self.db[PREFERENCES].find_one({"_id": customer_id}, {"outbox": 0})

    async def put_preferences(
        self, customer_id: str, fields: Mapping[str, Any], events: Sequence[CloudEvent]
    ) -> None:
        """Replace a customer's preferences with their event in the outbox (one write)."""
        collection = self.db[PREFERENCES]
        try:
            await collection.insert_one(
                new_with_events({"_id": customer_id, **fields}, Topic.PRIVACY, events)
            )
        except DuplicateKeyError:
            await collection.update_one(
                {"_id": customer_id}, with_events({"$set": dict(fields)}, Topic.PRIVACY, events)
            )
        self.runtime.relay.notify(PREFERENCES, customer_id)

    # ------------------------------------------------------------ access log

    async def log_access(self, customer_id: str, entry: Mapping[str, Any]) -> None:
        """Append a read of the customer's contact data; the oldest page goes when a new one starts."""
        counter = await self.db[ACCESS_LOG].find_one_and_update(
            {"_id": customer_id}, {"$inc": {"entries": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        seq = int((counter or {}).get("entries", 1)) - 1
        page = seq // ACCESS_PAGE_ENTRIES
        await self.db[ACCESS_LOG].update_one(
            {"_id": f"{customer_id}:p{page}"},
            {"$push": {"entries": dict(entry)}, "$setOnInsert": {"customer_id": customer_id, "page": page}},
            upsert=True,
        )
        if seq % ACCESS_PAGE_ENTRIES == 0 and page >= ACCESS_PAGES_KEPT:
            await self.db[ACCESS_LOG].delete_one({"_id": f"{customer_id}:p{page - ACCESS_PAGES_KEPT}"})

    async def access_pages(self, customer_id: str) -> int:
        """Return how many pages the customer's access log has had (the newest is that number - 1)."""
        counter = await self.db[ACCESS_LOG].find_one({"_id": customer_id})
        entries = int((counter or {}).get("entries", 0))
        return (entries + ACCESS_PAGE_ENTRIES - 1) // ACCESS_PAGE_ENTRIES

    async def access_page(self, customer_id: str, page: int) -> list[dict[str, Any]]:
        doc = await self.db[ACCESS_LOG].find_one({"_id": f"{customer_id}:p{page}"})
        return list((doc or {}).get("entries", []))
