"""The only module that speaks MongoDB: tickets (the aggregate, carrying its outbox) and customers.

Every ticket change is one conditional update of the ticket document guarded by its `version`, with the
events it causes appended to the same document's outbox (`with_events`). A storm ticket holds a unique
`storm_key` while it collects alerts; every other ticket holds a unique placeholder, so a plain unique
index (no partial index needed) makes racing creators of the same storm collapse into one ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import DomainError, RetryLater
from aftersales.shared.mongo import Database, IndexSpec, merge_updates
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

log = logging.getLogger("aftersales.intake")

TICKETS = "tickets"
CUSTOMERS = "customers"
STORMS = "storms"
REQUEST_KEYS = "request_keys"
KEEP_KEYS = 500
KEEP_TIMELINE = 500
MAX_CAS_ATTEMPTS = 200
DUPLICATE_KEY = 11000

INDEXES = [
    IndexSpec(TICKETS, [("storm_key", 1)], unique=True, name="storm_key_unique"),
    IndexSpec(TICKETS, [("created_at", -1), ("_id", -1)]),
    IndexSpec(TICKETS, [("customer_id", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("status", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("created_by", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("technician_id", 1), ("created_at", -1)]),
]


class ContentionError(DomainError, RetryLater):
    """A ticket changed under us too many times in a row; the caller may retry the whole request."""

    status = 503
    code = "busy"


@dataclass(frozen=True, slots=True)
class Change:
    """A decided change of one ticket: the update and the events it causes (one atomic write)."""

    update: Mapping[str, Any]
    events: Sequence[CloudEvent] = ()
    result: Any = None


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of `change`: the ticket as read before the change, and what was decided."""

    before: dict[str, Any]
    change: Change | None = None
    duplicate: bool = False


Decide = Callable[[dict[str, Any]], Change | None]


class TicketStore:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime

    @property
    def _db(self) -> Database:
        return self._runtime.db

    def _notify(self, ticket_id: str) -> None:
        """Hand the ticket to the outbox relay (repeated notifications of one ticket coalesce)."""
        self._runtime.relay.notify(TICKETS, ticket_id)

    # ------------------------------------------------------------ tickets: writes

    async def insert(self, doc: Mapping[str, Any], events: Sequence[CloudEvent]) -> bool:
        """Insert a new ticket with its events; return False when its id or storm key already exists."""
        try:
            await self._db[TICKETS].insert_one(new_with_events(doc, Topic.TICKETS, events))
        except DuplicateKeyError:
            return False
        self._notify(doc["_id"])
        return True

    async def change(self, ticket_id: str, decide: Decide, *, event_id: str | None = None) -> Applied | None:
        """Apply `decide(ticket)` to a ticket atomically (optimistic on `version`); None if it is missing.

        With `event_id` the change is applied at most once: an event already applied is a duplicate.
        `decide` may raise a DomainError (nothing is written) or return None (nothing to change).
        """
        tickets = self._db[TICKETS]
        for _ in range(MAX_CAS_ATTEMPTS):
            doc = await tickets.find_one({"_id": ticket_id}, {"outbox": 0})
            if doc is None:
                return None
            if event_id is not None and event_id in doc.get("applied_events", []):
                return Applied(before=doc, duplicate=True)
            decided = decide(doc)
            if decided is None and event_id is None:
                return Applied(before=doc)
            decided = decided or Change(update={})
            update = merge_updates(
                decided.update, {"$inc": {"version": 1}, "$set": {"updated_at": datetime.now(UTC)}}
            )
            if event_id is not None:
                update = merge_updates(
                    update, {"$push": {"applied_events": {"$each": [event_id], "$slice": -KEEP_KEYS}}}
                )
            result = await tickets.update_one(
                {"_id": ticket_id, "version": doc.get("version", 0)},
                with_events(update, Topic.TICKETS, decided.events),
            )
            if result.modified_count == 1:
                if decided.events:
                    self._notify(ticket_id)
                return Applied(before=doc, change=decided)
        raise ContentionError(f"ticket {ticket_id} kept changing; try again")

    async def open_storm(self, key: str, *, look_everywhere: bool = False) -> dict[str, Any] | None:
        """Return the ticket currently collecting alerts under storm `key`, if any.

        A pointer document (`storms`, keyed by the storm key) makes this two `_id` look-ups. The unique
        `storm_key` on tickets stays the source of truth: without a pointer the caller tries to open the
        storm's ticket, and only when that insert collides (a crash left a ticket without its pointer)
        does it ask again with `look_everywhere`, a query by `storm_key` (a scan on FerretDB).
        """
        tickets = self._db[TICKETS]
        pointer = await self._db[STORMS].find_one({"_id": key})
        if pointer is not None:
            doc = await tickets.find_one({"_id": pointer["ticket_id"]}, {"outbox": 0})
            if doc is not None and doc.get("storm_key") == key:
                return doc
        if not look_everywhere:
            return None
        doc = await tickets.find_one({"storm_key": key}, {"outbox": 0})
        if doc is not None:
            await self.point_storm(key, doc["_id"])
        return doc

    async def point_storm(self, key: str, ticket_id: str) -> None:
        """Remember which ticket collects storm `key` (a hint; see `open_storm`)."""
        try:
            await self._db[STORMS].update_one({"_id": key}, {"$set": {"ticket_id": ticket_id}}, upsert=True)
        except DuplicateKeyError:
            pass  # a racing writer created the pointer; the next look-up verifies it anyway

    async def claim_request_keys(self, claims: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert idempotency-key claims (one command); return the positions of keys claimed before."""
        try:
            await self._db[REQUEST_KEYS].insert_many([dict(c) for c in claims], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return sorted(int(e["index"]) for e in errors)
        return []

    async def request_key(self, key: str) -> dict[str, Any] | None:
        return await self._db[REQUEST_KEYS].find_one({"_id": key})

    async def conditional_update(
        self,
        doc: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Sequence[CloudEvent] = (),
    ) -> bool:
        """Apply `update` (+ events) only if the ticket is still at the version `doc` was read at."""
        full = merge_updates(update, {"$inc": {"version": 1}})
        result = await self._db[TICKETS].update_one(
            {"_id": doc["_id"], "version": doc.get("version", 0)}, with_events(full, Topic.TICKETS, events)
        )
        if result.modified_count == 1 and events:
            self._notify(doc["_id"])
        return result.modified_count == 1

    # ------------------------------------------------------------ tickets: reads

    async def get(self, ticket_id: str) -> dict[str, Any] | None:
        return await self._db[TICKETS].find_one({"_id": ticket_id}, {"outbox": 0, "applied_events": 0})

    async def list(
        self, query: Mapping[str, Any], *, after: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Return up to `limit` tickets matching `query`, newest first, after the cursor position."""
        full = dict(query)
        if after is not None:
            created_at, ticket_id = after
            full["$or"] = [
                {"created_at": {"$lt": created_at}},
                {"created_at": created_at, "_id": {"$lt": ticket_id}},
            ]
        cursor = (
            self._db[TICKETS]
            .find(full, {"outbox": 0, "applied_events": 0, "timeline": 0, "request_keys": 0})
            .sort([("created_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return [doc async for doc in cursor]

    # ------------------------------------------------------------ customers

    async def upsert_customer(self, customer_id: str, update: Mapping[str, Any]) -> None:
        """Create or refresh a customer's record with `update` (see `customers.record_update`; idempotent).

        The customer's tickets are not listed in this document (a list would grow without bound): they
        are the tickets with this `customer_id`, counted through the (customer_id, created_at) index."""
        for attempt in range(3):
            try:
                await self._db[CUSTOMERS].update_one({"_id": customer_id}, dict(update), upsert=True)
                return
            except DuplicateKeyError:
                if attempt == 2:
                    raise  # two first tickets of one new customer raced; the loser retries as an update

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        return await self._db[CUSTOMERS].find_one({"_id": customer_id})

    async def customer_ticket_count(self, customer_id: str) -> int:
        return await self._db[TICKETS].count_documents({"customer_id": customer_id})

    async def set_customer_tier(self, customer_id: str, tier: str, *, by: str) -> bool:
        """Set a customer's tier (a supervisor's decision); False when there is no such customer."""
        result = await self._db[CUSTOMERS].update_one(
            {"_id": customer_id},
            {"$set": {"tier": tier, "tier_set_by": by, "updated_at": datetime.now(UTC)}},
        )
        return result.matched_count == 1

    async def serves_customer(self, technician_id: str, customer_id: str) -> bool:
        """True when the technician works (or last worked) on a ticket of the customer."""
        tickets = self._db[TICKETS]
        for field in ("technician_id", "last_technician_id"):
            if await tickets.find_one({"customer_id": customer_id, field: technician_id}, {"_id": 1}):
                return True
        return False
