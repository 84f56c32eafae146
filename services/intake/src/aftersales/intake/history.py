"""A ticket's history beside its document, part of the store (MongoDB is spoken here and in `store`):
its timeline and the markers of the downstream events applied to it, every one read and written by
`_id` (FerretDB filters nothing else without scanning the whole collection).

- timeline: pages of `TIMELINE_PAGE` entries, `_id = "<ticket_id>:p<page>"`, each entry under its
  number (`entries.e000042`); the customer's messages beside their reply's entry (`messages`). Only the
  last `KEEP_TIMELINE` entries are kept and shown: a page is deleted when the page `KEEP_PAGES` after it
  begins.
- applied events: one marker per event, `_id = "<ticket_id>:<event id>"`, never pruned, so a
  redelivery is recognised however many events came since.

Both are written from the ticket's `last_appended` (what its recent changes appended, kept in the ticket
document) by a later change, before it replaces them: see `TicketStore.write`. Changes that append only
timeline entries and applied events (a routing, follow-up or feedback event) add theirs to what is
there, up to `UNSETTLED_MAX` of each, so most of them write the ticket alone: settling costs a page
upsert and a marker insert, paid once per `UNSETTLED_MAX` events instead of once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pymongo.errors import BulkWriteError, DuplicateKeyError

from aftersales.intake.conversation_pages import ConversationPages
from aftersales.intake.domain import Appended
from aftersales.shared.mongo import Database
from aftersales.shared.runtime import ServiceRuntime

TIMELINE = "timeline"
APPLIED_EVENTS = "applied_events"
TIMELINE_PAGE = 50  # entries per timeline page
KEEP_TIMELINE = 500  # entries of a ticket's timeline kept and shown
# Pages that hold the last KEEP_TIMELINE entries (they may start mid-page).
KEEP_PAGES = KEEP_TIMELINE // TIMELINE_PAGE + 1
DUPLICATE_KEY = 11000
UNSETTLED_MAX = 8  # timeline entries, and applied events, a ticket document holds until they are settled


class TicketHistory:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime
        self.conversation = ConversationPages(runtime)

    @property
    def _db(self) -> Database:
        return self._runtime.db

    async def applied(self, ticket_id: str, event_id: str) -> bool:
        """True when a change that applied the event was settled (see `TicketStore.load`)."""
        marker = await self._db[APPLIED_EVENTS].find_one({"_id": _marker_id(ticket_id, event_id)}, {"_id": 1})
        return marker is not None

    async def settle(self, ticket_id: str, last: Mapping[str, Any]) -> None:
        """Write what a ticket's last change appended to its own collections (idempotent: by `_id`)."""
        pages: dict[int, dict[str, Any]] = {}
        for entry in last.get("timeline") or ():
            seq = int(entry["seq"])
            pages.setdefault(seq // TIMELINE_PAGE, {})[f"entries.{_entry_key(seq)}"] = entry
        for key, message in (last.get("messages") or {}).items():
            pages.setdefault(_seq_of(key) // TIMELINE_PAGE, {})[f"messages.{key}"] = message
        for page, fields_ in sorted(pages.items()):
            await self._upsert(TIMELINE, _page_id(ticket_id, page), {**fields_, "ticket_id": ticket_id})
            if page >= KEEP_PAGES and f"entries.{_entry_key(page * TIMELINE_PAGE)}" in fields_:
                await self._db[TIMELINE].delete_one({"_id": _page_id(ticket_id, page - KEEP_PAGES)})
        await self.conversation.settle(ticket_id, last.get("conversation") or ())
        applied = [
            {"_id": _marker_id(ticket_id, e), "ticket_id": ticket_id} for e in last.get("applied") or ()
        ]
        if applied:
            try:
                await self._db[APPLIED_EVENTS].insert_many(applied, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise  # a marker already there is this change settled before (by a racer or a retry)

    async def _upsert(self, collection: str, doc_id: str, fields_: Mapping[str, Any]) -> None:
        update = {"$set": dict(fields_)}
        try:
            await self._db[collection].update_one({"_id": doc_id}, update, upsert=True)
        except DuplicateKeyError:  # a racing settler created the document: the upsert is an update now
            await self._db[collection].update_one({"_id": doc_id}, update, upsert=True)

    async def timeline(self, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return a stored ticket's timeline, oldest first: its last `KEEP_TIMELINE` entries (one `_id`
        read per page, one page for most tickets), the last change's from the ticket itself."""
        ticket_id, seq = doc["_id"], int(doc.get("timeline_seq") or 0)
        last = {int(e["seq"]): e for e in (doc.get("last_appended") or {}).get("timeline") or ()}
        first = max(0, seq - KEEP_TIMELINE)
        pages = sorted({s // TIMELINE_PAGE for s in range(first, seq) if s not in last})
        found = await asyncio.gather(
            *(self._db[TIMELINE].find_one({"_id": _page_id(ticket_id, p)}, {"entries": 1}) for p in pages)
        )
        entries: dict[int, Mapping[str, Any]] = {}
        for page in found:
            for key, entry in ((page or {}).get("entries") or {}).items():
                entries[_seq_of(key)] = entry
        entries.update(last)
        older = list(doc.get("timeline") or ())  # a ticket written before the timeline moved out
        ordered = [{k: v for k, v in entries[s].items() if k != "seq"} for s in sorted(entries) if s >= first]
        return (older + ordered)[-KEEP_TIMELINE:]


def merged(unsettled: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return a ticket's unsettled appends with a change's added to them; None when the older ones must
    be settled first: either holds conversation or customer messages (text is settled at once), or
    together they would hold more than `UNSETTLED_MAX` timeline entries or applied events."""
    if not unsettled:
        return dict(new)
    if any(kind in appends for appends in (unsettled, new) for kind in ("messages", "conversation")):
        return None
    out: dict[str, Any] = {}
    for kind in ("timeline", "applied"):
        both = [*(unsettled.get(kind) or ()), *(new.get(kind) or ())]
        if len(both) > UNSETTLED_MAX:
            return None
        if both:
            out[kind] = both
    return out


def last_appended(seq: int, appended: Appended) -> tuple[dict[str, Any], int]:
    """Return a change's appends as the ticket stores them until they are settled, its timeline
    entries numbered from `seq` (messages keyed by their reply's entry); and the next number."""
    timeline = [{**entry, "seq": seq + i} for i, entry in enumerate(appended.timeline)]
    last: dict[str, Any] = {}
    if timeline:
        last["timeline"] = timeline
    if appended.customer_messages:
        last["messages"] = {f"{_entry_key(seq)}-{i}": m for i, m in enumerate(appended.customer_messages)}
    if appended.applied_events:
        last["applied"] = list(appended.applied_events)
    if appended.conversation:  # numbered by the decision (`domain.conversation_entry`)
        last["conversation"] = [dict(e) for e in appended.conversation]
    return last, seq + len(timeline)


def _entry_key(seq: int) -> str:
    """Return the key of entry `seq` in its page (not all digits: a numeric path step may mean an
    array index to a database)."""
    return f"e{seq:06d}"


def _seq_of(key: str) -> int:
    return int(key[1:].split("-", 1)[0])


def _page_id(ticket_id: str, page: int) -> str:
    return f"{ticket_id}:p{page:05d}"


def _marker_id(ticket_id: str, event_id: str) -> str:
    return f"{ticket_id}:{event_id}"
