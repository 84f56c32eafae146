"""A ticket's conversation beside its document, part of the store (MongoDB is spoken here, in `history`
and in `store`): internal notes, staff messages and the customer's replies in pages of `PAGE` entries,
`_id = "<ticket_id>:c<page>"`, each entry under its number (`entries.e000042`). Read and written by `_id`
only. A conversation is bounded (`domain.MAX_CONVERSATION`), so no page is ever pruned.

Entries reach their page like timeline entries: the version-guarded ticket write keeps them in the
ticket's `last_appended`, and the next change settles them here (see `TicketStore.write`); readers merge
both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Database
from aftersales.shared.runtime import ServiceRuntime

CONVERSATION = "conversation"
PAGE = 50


class ConversationPages:
    def __init__(self, runtime: ServiceRuntime) -> None:
        self._runtime = runtime

    @property
    def _db(self) -> Database:
        return self._runtime.db

    async def settle(self, ticket_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        """Write entries a ticket's last change appended to their pages (idempotent: by `_id`)."""
        pages: dict[int, dict[str, Any]] = {}
        for entry in entries:
            seq = int(entry["seq"])
            pages.setdefault(seq // PAGE, {})[f"entries.{_entry_key(seq)}"] = dict(entry)
        for page, fields in sorted(pages.items()):
            update = {"$set": {**fields, "ticket_id": ticket_id}}
            try:
                await self._db[CONVERSATION].update_one(
                    {"_id": _page_id(ticket_id, page)}, update, upsert=True
                )
            except DuplicateKeyError:  # a racing settler created the page: the upsert is an update now
                await self._db[CONVERSATION].update_one(
                    {"_id": _page_id(ticket_id, page)}, update, upsert=True
                )

    async def read(
        self,
        ticket_id: str,
        *,
        count: int,
        unsettled: Iterable[Mapping[str, Any]],
        start: int,
        limit: int,
        shown: Callable[[Mapping[str, Any]], bool],
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Return up to `limit` shown entries numbered `start` or later, oldest first, and the number to
        continue from (None at the end). `count` is how many entries the ticket has had; `unsettled` the
        ones still in the ticket document. Pages are read one `_id` at a time until the limit is met."""
        last = {int(e["seq"]): e for e in unsettled}
        out: list[dict[str, Any]] = []
        seq = max(0, start)
        while seq < count and len(out) < limit:
            page = seq // PAGE
            entries = dict(last)
            if any(s not in last for s in range(seq, min(count, (page + 1) * PAGE))):
                doc = await self._db[CONVERSATION].find_one(
                    {"_id": _page_id(ticket_id, page)}, {"entries": 1}
                )
                for key, entry in ((doc or {}).get("entries") or {}).items():
                    entries.setdefault(int(key[1:]), entry)
            while seq < min(count, (page + 1) * PAGE) and len(out) < limit:
                entry = entries.get(seq)
                if entry is not None and shown(entry):
                    out.append({k: v for k, v in entry.items() if k != "seq"})
                seq += 1
        return out, (seq if seq < count else None)


def _entry_key(seq: int) -> str:
    return f"e{seq:06d}"


def _page_id(ticket_id: str, page: int) -> str:
    return f"{ticket_id}:c{page:05d}"
