"""The only module that speaks MongoDB: tickets (the aggregate, carrying its outbox) and customers.

Every ticket change is one conditional update of the ticket document guarded by its `version`, with the
events it causes appended to the same document's outbox (`with_events`). A storm ticket holds a unique
`storm_key` while it collects alerts; every other ticket holds a unique placeholder, so a plain unique
index (no partial index needed) makes racing creators of the same storm collapse into one ticket.

The ticket document holds no list that grows with its history (FerretDB rewrites a whole document on
every update, so each event applied to a ticket would cost a rewrite of an ever larger row): its timeline
and the markers of the events applied to it are documents of their own (`history`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pymongo.errors import BulkWriteError, DuplicateKeyError

from aftersales.intake import messages
from aftersales.intake.customer_records import CUSTOMER_PRODUCTS, CUSTOMERS, CustomerRecords, Read, product_id
from aftersales.intake.customers import CustomerNote
from aftersales.intake.domain import Ticket, TicketStatus
from aftersales.intake.history import DUPLICATE_KEY, TicketHistory, last_appended, merged
from aftersales.intake.views import TicketFilter
from aftersales.shared.aggregate import Decision
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

TICKETS = "tickets"
STORMS = "storms"
SHOWN_PRODUCTS = 50
REQUEST_KEYS = "request_keys"
# What a decision loads: the document without its outbox (and the lists tickets written before the
# timeline moved out still carry).
DECIDING = {"outbox": 0, "timeline": 0, "customer_messages": 0}

INDEXES = [
    IndexSpec(TICKETS, [("storm_key", 1)], unique=True, name="storm_key_unique"),
    IndexSpec(TICKETS, [("created_at", -1), ("_id", -1)]),
    IndexSpec(TICKETS, [("customer_id", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("status", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("created_by", 1), ("created_at", -1)]),
    IndexSpec(TICKETS, [("technician_id", 1), ("created_at", -1)]),
    IndexSpec(CUSTOMER_PRODUCTS, [("customer_id", 1), ("last_ticket_at", -1)]),
    IndexSpec(CUSTOMERS, [("channels", 1), ("_id", 1)]),  # a channel's list of its customers
    IndexSpec(CUSTOMERS, [("tier", 1), ("_id", 1)]),
]


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """An IoT alert's idempotency key, claimed as its own document (see `storms`)."""

    key: str
    partition: int | None
    offset: int | None
    fingerprint: str | None
    at: datetime | None = None


class StormKeys:
    """Which ticket collects a storm's alerts, and the alerts' idempotency keys (see `storms`)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime

    @property
    def _db(self) -> Database:
        return self._runtime.db

    async def open_storm(self, key: str, *, look_everywhere: bool = False) -> Ticket | None:
        """Return the ticket currently collecting alerts under storm `key`, if any.

        A pointer document (`storms`, keyed by the storm key) makes this two `_id` look-ups. The pointer
        is written before the storm's ticket (`claim_storm`), so a ticket opened for a storm always has
        one. Only a ticket written before pointers came first can lack it: when opening a storm collides
        with such a ticket, the caller asks again with `look_everywhere`, a query by `storm_key` (a scan
        on FerretDB, which must never be the common path: under load it fed a retry-and-scan spiral).
        """
        tickets = self._db[TICKETS]
        pointer = await self._db[STORMS].find_one({"_id": key})
        if pointer is not None:
            doc = await tickets.find_one({"_id": pointer["ticket_id"]}, DECIDING)
            if doc is not None and doc.get("storm_key") == key:
                return ticket_of(doc)
        if not look_everywhere:
            return None
        doc = await tickets.find_one({"storm_key": key}, DECIDING)
        if doc is None:
            return None
        await self.point_storm(key, doc["_id"])
        return ticket_of(doc)

    async def claim_storm(self, key: str, ticket_id: str) -> str | None:
        """Point storm `key` at the ticket about to be opened for it, before that ticket is written.

        Returns the id to open the storm's ticket with: `ticket_id`, or the id the pointer already names
        when that ticket was never written (a crash, or a racing writer still writing it: both insert
        the same id, and one insert wins). Returns None when the pointer names a ticket that still
        collects the storm or was moved meanwhile: the caller re-reads the storm."""
        storms = self._db[STORMS]
        try:
            await storms.insert_one({"_id": key, "ticket_id": ticket_id})
            return ticket_id
        except DuplicateKeyError:
            pass
        pointer = await storms.find_one({"_id": key})
        if pointer is None:
            return None
        current = str(pointer["ticket_id"])
        doc = await self._db[TICKETS].find_one({"_id": current}, {"storm_key": 1})
        if doc is None:
            return current
        if doc.get("storm_key") == key:
            return None
        moved = await storms.update_one(
            {"_id": key, "ticket_id": current}, {"$set": {"ticket_id": ticket_id}}
        )
        return ticket_id if moved.modified_count == 1 else None

    async def point_storm(self, key: str, ticket_id: str) -> None:
        """Remember which ticket collects storm `key` (a hint; see `open_storm`)."""
        try:
            await self._db[STORMS].update_one({"_id": key}, {"$set": {"ticket_id": ticket_id}}, upsert=True)
        except DuplicateKeyError:
            pass  # a racing writer created the pointer; the next look-up verifies it anyway

    async def claim_request_keys(self, claims: Sequence[KeyClaim]) -> list[int]:
        """Insert idempotency-key claims (one command); return the positions of keys claimed before."""
        documents = [
            {
                "_id": c.key,
                "partition": c.partition,
                "offset": c.offset,
                "fingerprint": c.fingerprint,
                "at": c.at,
            }
            for c in claims
        ]
        try:
            await self._db[REQUEST_KEYS].insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return sorted(int(e["index"]) for e in errors)
        return []

    async def request_key(self, key: str) -> KeyClaim | None:
        doc = await self._db[REQUEST_KEYS].find_one({"_id": key})
        if doc is None:
            return None
        return KeyClaim(key, doc.get("partition"), doc.get("offset"), doc.get("fingerprint"), doc.get("at"))


class TicketStore(StormKeys):
    """Tickets (the aggregate and what callers read of it), their storms and their customers."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        super().__init__(runtime)
        self.history = TicketHistory(runtime)
        self.customers = CustomerRecords(runtime)

    def _notify(self, ticket_id: str) -> None:
        """Hand the ticket to the outbox relay (repeated notifications of one ticket coalesce)."""
        self._runtime.relay.notify(TICKETS, ticket_id)

    def relay_pending(self, ticket_id: str) -> None:
        """Have the relay publish whatever the ticket still holds in its outbox (nothing: one read by
        `_id`). For a replayed creation: its first attempt may have landed while its caller got an
        error (a timeout, a killed process), so nobody told this process's relay about it."""
        self._notify(ticket_id)

    # ------------------------------------------------------------ tickets: the aggregate

    async def load(
        self, ticket_id: str, *, applying: str | None = None, stamp: int | None = None
    ) -> Ticket | None:
        """Return the ticket to decide on; with `applying` (a downstream event's id, and `stamp` its
        time as `Downstream.stamp`), its `applied_events` tell whether that event was applied already.

        The marker is read after the ticket, never before nor at once: a change settles the markers
        of the change before it (`TicketHistory.settle`) before its own write, so a ticket read that
        no longer lists the event in `last_appended` is followed by a marker read that finds it. No
        marker is read for an event later than every downstream event the ticket applied (its
        `downstream_until`, moved in the write that applies one): it cannot have been applied, and
        events mostly come in the order they happened."""
        doc = await self._db[TICKETS].find_one({"_id": ticket_id}, DECIDING)
        if doc is None:
            return None
        ticket = ticket_of(doc)
        if applying is None or applying in ticket.applied_events:
            return ticket
        if stamp is not None and ticket.downstream_until is not None and stamp > ticket.downstream_until:
            return ticket
        if await self.history.applied(ticket_id, applying):
            return replace(ticket, applied_events=ticket.applied_events | {applying})
        return ticket

    async def insert(self, ticket: Ticket, events: Sequence[BaseModel]) -> bool:
        """Insert a new ticket with its events; return False when its id or storm key already exists."""
        envelopes = [messages.envelope(m, ticket.id) for m in events]
        try:
            await self._db[TICKETS].insert_one(new_with_events(document_of(ticket), Topic.TICKETS, envelopes))
        except DuplicateKeyError:
            return False
        self._notify(ticket.id)
        return True

    async def write(self, before: Ticket, decision: Decision[Ticket]) -> bool:
        """Write a decided change (its changed fields, appends and events) if the ticket is still at the
        version `before` was read at; False when somebody changed it meanwhile (decide again).

        The ticket's write is the commit point, as for its events: a change's timeline entries and
        applied-event ids are written into the ticket document (`last_appended`, numbered from
        `timeline_seq`, added to the unsettled ones while `history.merged` allows) and reach their own
        collections when a later change settles them, just before it replaces them. Why not write them
        first: a timeline entry's `_id` is its number, which only the version-guarded write makes the
        winner's (two racing deciders would write the same number and the loser's entry could land
        last); and a marker written before a crash would make the redelivered event look applied when it
        never was. Written after the commit, a crash leaves them in the ticket, where readers see them,
        and settling twice writes the same `_id`s again.
        """
        old, new = _stored(before), _stored(decision.state)
        update: dict[str, Any] = {"$inc": {"version": 1}}
        changed = {name: value for name, value in new.items() if old[name] != value}
        appended = decision.state.appended
        if appended:
            new_appends, changed["timeline_seq"] = last_appended(before.timeline_seq, appended)
            unsettled = merged(before.last_appended, new_appends)
            if unsettled is None:
                await self.history.settle(before.id, before.last_appended)
                unsettled = new_appends
            changed["last_appended"] = unsettled
        if changed:
            update["$set"] = changed
        events = [messages.envelope(m, before.id) for m in decision.events]
        result = await self._db[TICKETS].update_one(
            {"_id": before.id, "version": before.version}, with_events(update, Topic.TICKETS, events)
        )
        if result.modified_count == 1 and events:
            self._notify(before.id)
        return result.modified_count == 1

    # ------------------------------------------------------------ tickets: what callers read

    async def get(self, ticket_id: str) -> dict[str, Any] | None:
        """Return a ticket's document as callers read it (with its timeline)."""
        doc = await self._db[TICKETS].find_one({"_id": ticket_id}, _NOT_SHOWN)
        if doc is None:
            return None
        doc["timeline"] = await self.history.timeline(doc)
        for name in ("last_appended", "timeline_seq"):
            doc.pop(name, None)
        return doc

    async def conversation(
        self, ticket: Ticket, *, start: int, limit: int, shown: Callable[[Mapping[str, Any]], bool]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Return a page of a ticket's conversation, oldest first, and where the next page starts."""
        return await self.history.conversation.read(
            ticket.id,
            count=ticket.conversation_seq,
            unsettled=ticket.last_appended.get("conversation") or (),
            start=start,
            limit=limit,
            shown=shown,
        )

    async def list(
        self, which: TicketFilter, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Return up to `limit` tickets matching `which`, newest first, after the cursor position."""
        query = _query(which)
        if after is not None:
            created_at, ticket_id = after
            query["$or"] = [
                {"created_at": {"$lt": created_at}},
                {"created_at": created_at, "_id": {"$lt": ticket_id}},
            ]
        cursor = (
            self._db[TICKETS]
            .find(query, {**_NOT_SHOWN, "timeline": 0, "last_appended": 0, "request_keys": 0})
            .sort([("created_at", -1), ("_id", -1)])
            .limit(limit)
        )
        return [doc async for doc in cursor]

    # ------------------------------------------------------------ customers

    async def record_customer(self, note: CustomerNote, *, read: Read | None = None) -> None:
        """Create or refresh a customer's record with what a ticket says of it (see `CustomerRecords`)."""
        await self.customers.record(note, read=read)

    async def customer_products(self, record: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        """Return a customer's products, most recently seen first (up to SHOWN_PRODUCTS); a record
        written before products moved out still lists its own."""
        cursor = (
            self._db[CUSTOMER_PRODUCTS]
            .find({"customer_id": record["_id"]}, {"product": 1})
            .sort("last_ticket_at", -1)
            .limit(SHOWN_PRODUCTS)
        )
        found = [doc["product"] async for doc in cursor]
        older = [p for p in record.get("products") or () if p not in found]
        return (found + older)[:SHOWN_PRODUCTS]

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        return await self._db[CUSTOMERS].find_one({"_id": customer_id})

    async def customer_ticket_count(self, customer_id: str) -> int:
        return await self._db[TICKETS].count_documents({"customer_id": customer_id})

    async def serves_customer(self, technician_id: str, customer_id: str) -> bool:
        """True when the technician works (or last worked) on a ticket of the customer."""
        tickets = self._db[TICKETS]
        for field in ("technician_id", "last_technician_id"):
            if await tickets.find_one({"customer_id": customer_id, field: technician_id}, {"_id": 1}):
                return True
        return False


# ---------------------------------------------------------------- tickets <-> documents

# What callers are never shown of a ticket's document.
_NOT_SHOWN = {"outbox": 0, "applied_events": 0, "customer_messages": 0, "downstream_until": 0}
# The ticket's fields stored as they are (what it appends is written by `TicketStore.write`).
_STORED = tuple(
    f.name
    for f in fields(Ticket)
    if f.name not in {"id", "version", "applied_events", "appended", "timeline_seq", "last_appended"}
)
# Optional fields loaded as they are stored.
_AS_STORED = tuple(
    f.name
    for f in fields(Ticket)
    if f.default is None and f.name not in {"category_hint", "priority_hint", "assignment_mark"}
)
# Lifecycle fields a new ticket's document leaves out until a change sets them.
_SET_LATER = {
    "grid_id",
    "request_offsets",
    "assignment_mark",
    "pending_followup",
    "resolved_at",
    "cancelled_at",
    "cancel_reason",
    "closed_at",
    "close_reason",
    "close_note",
    "merged_into",
    "conversation_seq",
}


def ticket_of(doc: Mapping[str, Any]) -> Ticket:
    """Return the ticket a stored document holds (without its timeline and outbox)."""
    mark, last = doc.get("assignment_mark"), dict(doc.get("last_appended") or {})
    as_stored: dict[str, Any] = {name: doc.get(name) for name in _AS_STORED}
    return Ticket(
        id=doc["_id"],
        version=doc.get("version", 0),
        status=TicketStatus(doc["status"]),
        channel=Channel(doc["channel"]),
        category=Category(doc["category"]),
        priority=Priority(doc["priority"]),
        rules_version=doc["rules_version"],
        matched_rules=tuple(doc.get("matched_rules") or ()),
        category_hint=Category(doc["category_hint"]) if doc.get("category_hint") else None,
        priority_hint=Priority(doc["priority_hint"]) if doc.get("priority_hint") else None,
        title=doc["title"],
        description=doc["description"],
        customer_id=doc["customer_id"],
        customer_tier=CustomerTier(doc.get("customer_tier", CustomerTier.STANDARD.value)),
        customer_timezone=doc.get("customer_timezone", "UTC"),
        region_code=doc["region_code"],
        product=doc.get("product") or {},
        request_offsets=dict(doc.get("request_offsets") or {}),
        request_keys=tuple(doc.get("request_keys") or ()),
        storm_key=doc["storm_key"],
        created_by=doc["created_by"],
        source=doc.get("source", ""),
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        status_changed_at=doc.get("status_changed_at") or doc["created_at"],
        reopen_count=int(doc.get("reopen_count", 0)),
        assignment_mark=(mark[0], mark[1]) if mark else None,
        # the last change's, and the window a ticket written before the markers moved out still holds
        applied_events=frozenset((*(last.get("applied") or ()), *(doc.get("applied_events") or ()))),
        timeline_seq=int(doc.get("timeline_seq") or 0),
        conversation_seq=int(doc.get("conversation_seq") or 0),
        last_appended=last,
        **as_stored,
    )


def document_of(ticket: Ticket) -> dict[str, Any]:
    """Return a new ticket's document (its first timeline entries in `last_appended`)."""
    fields = {k: v for k, v in _stored(ticket).items() if k not in _SET_LATER or v}
    last, seq = last_appended(ticket.timeline_seq, ticket.appended)
    return {"_id": ticket.id, "version": ticket.version, **fields, "timeline_seq": seq, "last_appended": last}


def _stored(ticket: Ticket) -> dict[str, Any]:
    """Return the ticket's stored fields (all but its id, version and lists), as BSON types."""
    return {name: _plain(getattr(ticket, name)) for name in _STORED}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _query(which: TicketFilter) -> dict[str, Any]:
    query = {
        name: _plain(value)
        for name, value in (
            ("status", which.status),
            ("customer_id", which.customer_id),
            ("channel", which.channel),
            ("category", which.category),
        )
        if value is not None
    }
    created = {
        op: at for op, at in (("$gte", which.created_from), ("$lt", which.created_to)) if at is not None
    }
    if created:
        query["created_at"] = created
    for name, value in (("created_by", which.created_by), ("technician_id", which.technician_id)):
        if value is not None:
            query[name] = value
    return query


# ---------------------------------------------------------------- the one-off re-keying (see `rekey`)


async def legacy_customers(db: Database) -> AsyncIterator[dict[str, Any]]:
    """Yield the customer records whose id has the shape of the old, unkeyed derivation."""
    async for record in db[CUSTOMERS].find({"_id": {"$regex": "^C-[0-9a-f]{16}$"}}):
        yield record


async def move_customer(db: Database, record: Mapping[str, Any], new_id: str) -> None:
    """Merge a customer's record into `new_id` (its channel links kept), point its tickets there and
    remove the old record (idempotent)."""
    fields = {k: v for k, v in record.items() if k not in {"_id", "products", "channels"}}
    update: dict[str, Any] = {"$setOnInsert": fields}
    for name in ("products", "channels"):
        if record.get(name):
            update.setdefault("$addToSet", {})[name] = {"$each": record[name]}
    try:
        await db[CUSTOMERS].update_one({"_id": new_id}, update, upsert=True)
    except DuplicateKeyError:
        await db[CUSTOMERS].update_one(
            {"_id": new_id}, {k: v for k, v in update.items() if k != "$setOnInsert"}
        )
    await db[TICKETS].update_many({"customer_id": record["_id"]}, {"$set": {"customer_id": new_id}})
    async for product in db[CUSTOMER_PRODUCTS].find({"customer_id": record["_id"]}):
        moved = {**product, "_id": product_id(new_id, product["product"]), "customer_id": new_id}
        await db[CUSTOMER_PRODUCTS].replace_one({"_id": moved["_id"]}, moved, upsert=True)
        await db[CUSTOMER_PRODUCTS].delete_one({"_id": product["_id"]})
    await db[CUSTOMERS].delete_one({"_id": record["_id"]})
