"""The ticket search index (see `search` for the terms): postings in bounded blocks, every read by `_id`.

One collection, `search_index`, holds four kinds of documents:
- `seq`: the last ordinal given; each indexed ticket gets the next one (in indexing order, so newest
  tickets have the highest ordinals and a search walks from the top down);
- `t:<ticket id>`: the ticket's ordinal and the terms it is indexed under (to take them back out when
  the ticket changes or its customer's data is erased);
- `p:<term>|<block>`: the postings of one term for one block of ordinals (`<ordinal>|<ticket id>`
  strings): at most the index's block size of entries, so no document grows with the data. The size is
  recorded in `seq` (`block`; an index begun before it was recorded has blocks of LEGACY_BLOCK). Small
  blocks keep writes cheap: a posting added to a block rewrites the whole block document (on FerretDB,
  an `$addToSet` into a block of 2,000 entries took 11.5 ms, into one of 10 entries 1.4 ms), and every
  common term (open/done, region, facets) gets one such write per batch of tickets;
- `d:<term>|<chunk>`: the blocks a term has postings in (at most CHUNK of them per document), so a rare
  term (a serial, a customer) is found by reading a handful of documents, not every block.
FerretDB answers only `_id` equality without decoding whole collections (`$in` and ranges scan), so
every read is a `find_one` by `_id`, several at once; writes of a batch are one `bulk_write`.

A search reads the directories of its terms, intersects the blocks, then walks them newest first,
intersecting the terms' postings and checking each candidate ticket as it is stored now, until it has a
page or has read `max_reads` tickets (then it returns what it has with a cursor to go on).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from aftersales.intake.search import SearchQuery, entry, entry_ordinal, entry_ticket, matches

SEARCH = "search_index"
BLOCK = 512  # postings per block document of a new index (~16 KB at most)
LEGACY_BLOCK = 2048  # the block size of an index whose `seq` records none
READ_AHEAD = 4  # blocks whose postings a search reads at once, at most (1, 2, then this)
CHUNK = 1024  # blocks per directory document
KNOWN_PAIRS = 200_000  # (term, block) pairs this process remembers having put in a directory
SHOWN = {"outbox": 0, "timeline": 0, "last_appended": 0, "request_keys": 0, "customer_messages": 0}


@dataclass(frozen=True, slots=True)
class Hits:
    """A page of matching tickets (their documents), the cursor to go on from, and how many tickets
    were read to find them."""

    tickets: list[dict[str, Any]]
    next_cursor: int | None
    examined: int


@dataclass(slots=True)
class _Changes:
    adds: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    removes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    directory: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


class SearchIndex:
    """Keeps the postings of intake's tickets and answers searches from them."""

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], *, tickets: str = "tickets", customers: str = "customers"
    ) -> None:
        self.index = db[SEARCH]
        self.tickets = db[tickets]
        self.customers = db[customers]
        self._known: dict[tuple[str, int], None] = {}
        self._facets = False
        self._block: int | None = None  # the index's block size, once read (it never changes)

    # ------------------------------------------------------------ writing

    async def put(self, terms_of: Mapping[str, Sequence[str] | None]) -> int:
        """Index each ticket under its terms (None: the ticket is gone, take it out); return how many
        tickets' terms changed. Idempotent: a repeated call changes nothing; a call cut short is
        finished by the next one (postings first, the ticket's recorded terms last)."""
        before = await self._recorded(terms_of)
        ordinals = await self._ordinals(terms_of, before)
        size = await self.block_size()
        changes = _Changes()
        changed: dict[str, list[str]] = {}
        for ticket_id, terms in terms_of.items():
            old = set(before.get(ticket_id, {}).get("terms") or ())
            new = set(terms or ())
            if ticket_id not in ordinals or old == new:
                continue
            posting, block = entry(ordinals[ticket_id], ticket_id), ordinals[ticket_id] // size
            for term in new - old:
                changes.adds[f"p:{term}|{block}"].append(posting)
                changes.directory[term].add(block)
            for term in old - new:
                changes.removes[f"p:{term}|{block}"].append(posting)
            changed[ticket_id] = sorted(new)
        await self._write(changes)
        if changed:
            await self.index.bulk_write(
                [UpdateOne({"_id": f"t:{t}"}, {"$set": {"terms": terms}}) for t, terms in changed.items()],
                ordered=False,
            )
        return len(changed)

    async def _recorded(self, terms_of: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        docs = await asyncio.gather(*(self.index.find_one({"_id": f"t:{t}"}) for t in terms_of))
        return {t: d for t, d in zip(terms_of, docs, strict=True) if d is not None}

    async def _ordinals(
        self, terms_of: Mapping[str, Sequence[str] | None], before: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, int]:
        """Return each ticket's ordinal, giving new ones to tickets indexed for the first time."""
        ordinals = {t: int(d["ord"]) for t, d in before.items()}
        new = [t for t, terms in terms_of.items() if t not in ordinals and terms]
        if not new:
            return ordinals
        seq = await self.index.find_one_and_update(
            {"_id": "seq"},
            {"$inc": {"n": len(new)}, "$setOnInsert": {"facets": True, "block": BLOCK}},
            upsert=True,
            return_document=True,
        )
        assert seq is not None  # an upsert returning the document after it
        self._block = _block_of(seq)
        first = int(seq["n"]) - len(new) + 1
        result = await self.index.bulk_write(
            [
                UpdateOne({"_id": f"t:{t}"}, {"$setOnInsert": {"ord": first + i, "terms": []}}, upsert=True)
                for i, t in enumerate(new)
            ],
            ordered=False,
        )
        inserted = set((result.upserted_ids or {}).values())
        ordinals.update({t: first + i for i, t in enumerate(new) if f"t:{t}" in inserted})
        # Another indexer (a rebalance overlap) gave the others an ordinal first: the stored one counts.
        others = dict.fromkeys(t for t in new if f"t:{t}" not in inserted)
        ordinals.update({t: int(d["ord"]) for t, d in (await self._recorded(others)).items()})
        return ordinals

    async def _write(self, changes: _Changes) -> None:
        ops: list[UpdateOne] = [
            UpdateOne({"_id": key}, {"$addToSet": {"ids": {"$each": postings}}}, upsert=True)
            for key, postings in changes.adds.items()
        ]
        ops += [
            UpdateOne({"_id": key}, {"$pull": {"ids": {"$in": postings}}})
            for key, postings in changes.removes.items()
        ]
        fresh: dict[str, set[int]] = defaultdict(set)
        for term, blocks in changes.directory.items():
            for block in blocks:
                if (term, block) not in self._known:
                    fresh[f"d:{term}|{block // CHUNK}"].add(block)
        ops += [
            UpdateOne({"_id": key}, {"$addToSet": {"blocks": {"$each": sorted(blocks)}}}, upsert=True)
            for key, blocks in fresh.items()
        ]
        if ops:
            await self.index.bulk_write(ops, ordered=False)
        for term, blocks in changes.directory.items():
            self._remember((term, b) for b in blocks)

    def _remember(self, pairs: Iterable[tuple[str, int]]) -> None:
        for pair in pairs:
            self._known[pair] = None
        while len(self._known) > KNOWN_PAIRS:
            self._known.pop(next(iter(self._known)))

    async def block_size(self) -> int:
        """The index's block size: what its `seq` records (read once per process; it never changes)."""
        if self._block is None:
            self._block = _block_of(await self.index.find_one({"_id": "seq"}, {"block": 1}))
        return self._block

    # ------------------------------------------------------------ searching

    async def has_facets(self) -> bool:
        """True when every ticket in the index was indexed with its facet terms (an index begun by an
        older release lacks them: its searches check those fields on the candidates only). An empty
        index will have them. Once true it stays true, so it is read until then only."""
        if not self._facets:
            seq = await self.index.find_one({"_id": "seq"}, {"facets": 1})
            self._facets = seq is None or bool(seq.get("facets"))
        return self._facets

    async def search(
        self,
        query: SearchQuery,
        terms: Sequence[str],
        *,
        visible: Callable[[Mapping[str, Any]], bool],
        limit: int,
        before: int | None,
        max_reads: int,
    ) -> Hits:
        """Return up to `limit` tickets matching `query` that the caller may see, newest first, with
        ordinals below `before` (a cursor); stop early after reading `max_reads` tickets. `terms` are
        the query's index terms as stored."""
        blocks, size = await self._blocks(terms)
        if before is not None:
            blocks = [b for b in blocks if b * size < before]
        walk = _Walk(limit, max_reads)
        ahead = 1
        while blocks and not walk.done:
            group, blocks = blocks[:ahead], blocks[ahead:]
            ahead = min(ahead * 2, READ_AHEAD)
            # blocks newest first, each newest first: together, one list newest first, checked in pages
            found = await asyncio.gather(*(self._postings(terms, b, before) for b in group))
            await _examine(self, walk, [p for postings in found for p in postings], query, visible)
        return Hits(walk.found, walk.cursor, walk.examined)

    async def _blocks(self, terms: Sequence[str]) -> tuple[list[int], int]:
        """The blocks holding postings of every term, newest first, and the index's block size."""
        seq = await self.index.find_one({"_id": "seq"})
        size = self._block = _block_of(seq)
        chunks = range(int(seq["n"]) // size // CHUNK + 1) if seq else range(0)
        keys = [(term, f"d:{term}|{c}") for term in terms for c in chunks]
        docs = await asyncio.gather(*(self.index.find_one({"_id": key}) for _, key in keys))
        per_term: dict[str, set[int]] = {term: set() for term in terms}
        for (term, _), doc in zip(keys, docs, strict=True):
            per_term[term].update(doc["blocks"] if doc else ())
        common = set.intersection(*per_term.values()) if per_term else set()
        return sorted(common, reverse=True), size

    async def _postings(self, terms: Sequence[str], block: int, before: int | None) -> list[str]:
        """The postings of the block every term has, newest first."""
        docs = await asyncio.gather(*(self.index.find_one({"_id": f"p:{t}|{block}"}) for t in terms))
        sets = [set(doc["ids"]) if doc else set() for doc in docs]
        common = set.intersection(*sets) if sets else set()
        if before is not None:
            common = {p for p in common if entry_ordinal(p) < before}
        return sorted(common, reverse=True)

    async def names(self, customer_ids: Iterable[Any]) -> dict[str, str]:
        """Return the customers' names as stored now (none for an erased or unnamed one)."""
        ids = sorted({c for c in customer_ids if isinstance(c, str) and c})
        docs = await asyncio.gather(*(self.customers.find_one({"_id": c}, {"name": 1}) for c in ids))
        return {c: str(d["name"]) for c, d in zip(ids, docs, strict=True) if d and d.get("name")}

    async def read_tickets(self, ticket_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """The tickets' documents as a search shows them (None for a missing one), in order."""
        reads: list[Awaitable[dict[str, Any] | None]] = [
            self.tickets.find_one({"_id": t}, SHOWN) for t in ticket_ids
        ]
        return list(await asyncio.gather(*reads))


async def _examine(
    index: SearchIndex,
    walk: _Walk,
    postings: Sequence[str],
    query: SearchQuery,
    visible: Callable[[Mapping[str, Any]], bool],
) -> None:
    """Check candidates (newest first) a page at a time, until the walk is done."""
    for start in range(0, len(postings), walk.limit):
        page = [p for p in postings[start : start + walk.limit] if entry_ticket(p) not in walk.seen]
        walk.seen.update(entry_ticket(p) for p in page)
        docs = await index.read_tickets([entry_ticket(p) for p in page])
        names = await index.names(d.get("customer_id") for d in docs if d) if query.name else {}
        walk.examined += len(page)
        for posting, doc in zip(page, docs, strict=True):
            name = names.get(doc.get("customer_id") or "") if doc else None
            if doc is not None and matches(query, doc, name) and visible(doc):
                walk.found.append(doc)
                if len(walk.found) == walk.limit:
                    walk.stop(entry_ordinal(posting))
                    return
        if walk.examined >= walk.max_reads and page:
            walk.stop(entry_ordinal(page[-1]))
            return


def _block_of(seq: Mapping[str, Any] | None) -> int:
    """The block size an index's `seq` document records (none yet: a new index's)."""
    if seq is None:
        return BLOCK
    return int(seq.get("block") or LEGACY_BLOCK)


@dataclass(slots=True)
class _Walk:
    """A search's progress through the blocks: what it found, what it read, where it stopped."""

    limit: int
    max_reads: int
    found: list[dict[str, Any]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    examined: int = 0
    cursor: int | None = None
    done: bool = False

    def stop(self, cursor: int) -> None:
        self.cursor, self.done = cursor, True


async def load_index(
    db: AsyncDatabase[dict[str, Any]], terms_of: Sequence[tuple[str, Sequence[str]]], *, chunk: int = 2000
) -> int:
    """Index tickets into an empty index in bulk (history seeded for a benchmark, or a rebuild into
    a fresh collection): every document is built here and inserted with `insert_many`."""
    if await db[SEARCH].find_one({"_id": "seq"}) is not None:
        raise ValueError("load_index() builds an empty index; use SearchIndex.put() on one in use")
    postings: dict[str, list[str]] = defaultdict(list)
    directory: dict[str, set[int]] = defaultdict(set)
    tickets = []
    for i, (ticket_id, terms) in enumerate(terms_of, start=1):
        block = i // BLOCK
        tickets.append({"_id": f"t:{ticket_id}", "ord": i, "terms": sorted(set(terms))})
        for term in set(terms):
            postings[f"p:{term}|{block}"].append(entry(i, ticket_id))
            directory[f"d:{term}|{block // CHUNK}"].add(block)
    docs: list[dict[str, Any]] = [
        *tickets,
        *({"_id": k, "ids": v} for k, v in postings.items()),
        *({"_id": k, "blocks": sorted(v)} for k, v in directory.items()),
        {"_id": "seq", "n": len(tickets), "facets": True, "block": BLOCK},
    ]
    for start in range(0, len(docs), chunk):
        await db[SEARCH].insert_many(docs[start : start + chunk], ordered=False)
    return len(docs)
