"""Customer records as stored, part of the store (MongoDB is spoken here and in `store`): the record, its
products (one document each) and its bounded change log, every one read and written by `_id`.

A record carries a `version`; every change is one update guarded by it, which also bumps `history_seq`
and keeps the change's log entry in the record (`last_change`). The next change first copies that entry
to `customer_history` (`_id = "<customer_id>:h<seq>"`, idempotent) and deletes the entry `HISTORY_KEPT`
before it, so the log is bounded and a crash loses nothing the record does not still show."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.intake.customers import HISTORY_KEPT, CustomerNote, filled, history_entry, new_record
from aftersales.shared.errors import Conflict, RetryLater
from aftersales.shared.mongo import Database
from aftersales.shared.runtime import ServiceRuntime

CUSTOMERS = "customers"
CUSTOMER_PRODUCTS = "customer_products"  # one per customer and product: `<customer_id>:<product key>`
CUSTOMER_HISTORY = "customer_history"
FILL_ATTEMPTS = 3  # a request's fill of empty fields is skipped when the record keeps changing meanwhile
CHANGE_ATTEMPTS = 10

log = logging.getLogger("aftersales.intake")


@dataclass(frozen=True, slots=True)
class RecordChange:
    """One change of a customer record: the fields it sets and its log entry's kind and author."""

    kind: str  # filled, edited, tier_set, product_added
    by: str
    at: datetime
    sets: Mapping[str, Any] = field(default_factory=dict)
    logged: Sequence[str] = ()  # the field names the log shows (default: those set)
    link_channel: str | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """A customer record as read (None: there was none)."""

    record: dict[str, Any] | None


# Called before a record is created by hand (customer id, ticket id, when): retention.
Noted = Callable[[str, str | None, datetime], Awaitable[None]]


class CustomerRecords:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime
        self.noted: Noted | None = None

    @property
    def _db(self) -> Database:
        return self._runtime.db

    async def get(self, customer_id: str) -> dict[str, Any] | None:
        return await self._db[CUSTOMERS].find_one({"_id": customer_id})

    async def create(self, record: Mapping[str, Any], *, by_ticket: bool = False) -> bool:
        """Insert a new record (see `customers.new_record`); False when the customer exists. A record
        created by a ticket is armed for retention from the ticket stream (`IntakeRetention`), one made
        by hand here."""
        if self.noted is not None and not by_ticket:
            await self.noted(record["_id"], None, record["updated_at"])
        try:
            await self._db[CUSTOMERS].insert_one(dict(record))
        except DuplicateKeyError:
            return False
        return True

    async def record(self, note: CustomerNote, *, read: Read | None = None) -> None:
        """Create or refresh a customer's record with what a ticket says of it (idempotent): a new
        record takes the request's profile; an existing one only its empty fields (and a tier staff
        stated). Its products are documents of their own, its tickets the tickets with its id.
        `read`: the record as the caller read it moments ago (a stale one costs a re-read, never a
        wrong write: creating is an insert, filling a write guarded by the record's version)."""
        await self.put_product(note.customer_id, note.product, at=note.at)
        record = read.record if read is not None else await self.get(note.customer_id)
        if record is None and await self.create(new_record(note), by_ticket=True):
            return
        await self.fill(note, record)

    async def fill(self, note: CustomerNote, record: Mapping[str, Any] | None = None) -> None:
        """Fill an existing record's empty fields from a note (and link its channel), never overwriting."""
        touch: dict[str, Any] = {"updated_at": note.at}
        if note.ticket_id:
            touch["last_ticket_id"] = note.ticket_id
        for _ in range(FILL_ATTEMPTS):
            record = record or await self.get(note.customer_id)
            if record is None:
                raise RetryLater(f"customer {note.customer_id} vanished while being recorded")
            fill = filled(record, note)
            if not fill:
                update: dict[str, Any] = {"$set": touch}
                if note.channel is not None:
                    update["$addToSet"] = {"channels": note.channel}
                await self._db[CUSTOMERS].update_one({"_id": note.customer_id}, update)
                return
            kind = "tier_set" if set(fill) == {"tier"} else "filled"
            sets = {**fill, **touch}
            change = RecordChange(kind, note.by, note.at, sets, logged=list(fill), link_channel=note.channel)
            if await self._write(record, change):
                return
            record = None
        log.warning(
            "customer record kept changing; the request's empty-field fill was skipped",
            extra={"customer_id": note.customer_id},
        )

    async def change(
        self,
        customer_id: str,
        decide: Callable[[Mapping[str, Any]], RecordChange | None],
        *,
        expected_version: int | None = None,
    ) -> dict[str, Any] | None:
        """Apply a decided change to a record until the version-guarded write wins; return the record
        after it (None: no such customer). 409 naming `If-Match` when it is not at `expected_version`."""
        for _ in range(CHANGE_ATTEMPTS):
            record = await self.get(customer_id)
            if record is None:
                return None
            version = int(record.get("version") or 0)
            if expected_version is not None and version != expected_version:
                raise Conflict(
                    f"customer {customer_id} is at version {version}, not {expected_version}: read it again",
                    field="If-Match",
                )
            change = decide(record)
            if change is None:
                return record
            if await self._write(record, change):
                return await self.get(customer_id)
        raise RetryLater(f"customer {customer_id} changed on each of {CHANGE_ATTEMPTS} attempts; try again")

    async def _write(self, record: Mapping[str, Any], change: RecordChange) -> bool:
        customer_id, seq = record["_id"], int(record.get("history_seq") or 0)
        if record.get("last_change"):
            await self._settle(customer_id, record["last_change"])
        tier = change.sets.get("tier")
        entry = history_entry(
            seq,
            change.kind,
            by=change.by,
            at=change.at,
            fields=change.logged or [k for k in change.sets if k not in {"updated_at", "last_ticket_id"}],
            tier=str(tier) if tier is not None else None,
        )
        update: dict[str, Any] = {
            "$set": {"updated_at": change.at, **change.sets, "last_change": entry, "history_seq": seq + 1},
            "$inc": {"version": 1},
        }
        if change.link_channel is not None:
            update["$addToSet"] = {"channels": change.link_channel}
        # `None` matches a record written before records had versions
        guard = {"_id": customer_id, "version": record.get("version")}
        result = await self._db[CUSTOMERS].update_one(guard, update)
        return result.modified_count == 1

    async def _settle(self, customer_id: str, entry: Mapping[str, Any]) -> None:
        seq = int(entry["seq"])
        doc_id = _history_id(customer_id, seq)
        update = {"$set": {**entry, "customer_id": customer_id}}
        try:
            await self._db[CUSTOMER_HISTORY].update_one({"_id": doc_id}, update, upsert=True)
        except DuplicateKeyError:
            await self._db[CUSTOMER_HISTORY].update_one({"_id": doc_id}, update, upsert=True)
        if seq >= HISTORY_KEPT:
            await self._db[CUSTOMER_HISTORY].delete_one({"_id": _history_id(customer_id, seq - HISTORY_KEPT)})

    async def history(
        self, record: Mapping[str, Any], *, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Return up to `limit` entries of a record's change log, newest first, numbered below `before`;
        and the `before` of the next page (None at the end). One `_id` read per entry."""
        count = int(record.get("history_seq") or 0)
        floor = max(0, count - HISTORY_KEPT)
        top = count if before is None else min(before, count)
        wanted = list(range(top - 1, max(floor, top - limit) - 1, -1))
        last = record.get("last_change") or {}
        found = await asyncio.gather(
            *(
                _done(last)
                if last.get("seq") == s
                else self._db[CUSTOMER_HISTORY].find_one({"_id": _history_id(record["_id"], s)})
                for s in wanted
            )
        )
        entries = [{k: v for k, v in e.items() if k not in {"_id", "customer_id"}} for e in found if e]
        return entries, (wanted[-1] if wanted and wanted[-1] > floor else None)

    async def list(
        self, *, channel: str | None, tier: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Return up to `limit` records by id after `after`: those `channel` served (None: all)."""
        query: dict[str, Any] = {}
        if channel is not None:
            query["channels"] = channel
        if tier is not None:
            query["tier"] = tier
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._db[CUSTOMERS].find(query).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def put_product(self, customer_id: str, product: Mapping[str, Any], *, at: datetime) -> None:
        """Remember one of a customer's products (idempotent: one document per customer and product)."""
        update = {"$set": {"customer_id": customer_id, "product": dict(product), "last_ticket_at": at}}
        doc_id = product_id(customer_id, product)
        try:
            await self._db[CUSTOMER_PRODUCTS].update_one({"_id": doc_id}, update, upsert=True)
        except DuplicateKeyError:  # two first tickets raced to insert it: the same upsert is an update now
            await self._db[CUSTOMER_PRODUCTS].update_one({"_id": doc_id}, update, upsert=True)


async def _done(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return value


def product_id(customer_id: str, product: Mapping[str, Any]) -> str:
    """Return the `_id` of a customer's product: the customer and a digest of the product's fields."""
    digest = hashlib.sha256(json.dumps(dict(product), sort_keys=True, default=str).encode()).hexdigest()
    return f"{customer_id}:{digest[:16]}"


def _history_id(customer_id: str, seq: int) -> str:
    return f"{customer_id}:h{seq:06d}"
