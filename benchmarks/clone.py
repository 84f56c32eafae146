"""Clone the documents of a few closed tickets into history: every document that belongs to exactly one
template ticket is copied with new ids, in bulk, straight as BSON.

Ownership is found from the data, not from a list of collections: a template's *tokens* are the hex runs
(8+ hex digits) of its ticket id and of the ids of its events; a document that mentions the tokens of
exactly one template and has an `_id` that can be rewritten belongs to it, and the hex runs of its `_id`
become tokens too (a customer, a visit, a survey...). Shared documents (grids, technicians, KPI rollups:
ids without hex runs, or mentioning several templates) are never cloned. A clone replaces every token
by a random hex run of the same length (so the BSON keeps its layout and the replacement is a byte
copy), shifts every datetime into the past, and drops pending outbox entries; active timers are skipped.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError

HEX_RUN = re.compile(rb"[0-9a-f]{8,}")
TZ: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
ACTIVE_TIMER_STATES = {"pending", "running"}


def _walk(buf: bytes, start: int, dates: list[int], top: bool, oids: list[int]) -> int:
    """Record the offsets of datetime values (and of a top-level ObjectId `_id`); return the doc size."""
    size = int.from_bytes(buf[start : start + 4], "little")
    i, end = start + 4, start + size - 1
    while i < end:
        kind = buf[i]
        j = buf.index(0, i + 1)
        name, i = buf[i + 1 : j], j + 1
        if kind == 0x09:
            dates.append(i)
            i += 8
        elif kind in (0x01, 0x11, 0x12):
            i += 8
        elif kind in (0x02, 0x0D, 0x0E):
            i += 4 + int.from_bytes(buf[i : i + 4], "little")
        elif kind in (0x03, 0x04):
            i += _walk(buf, i, dates, False, oids)
        elif kind == 0x05:
            i += 5 + int.from_bytes(buf[i : i + 4], "little")
        elif kind == 0x07:
            if top and name == b"_id":
                oids.append(i)
            i += 12
        elif kind == 0x08:
            i += 1
        elif kind == 0x10:
            i += 4
        elif kind == 0x13:
            i += 16
        elif kind == 0x0B:
            i = buf.index(0, buf.index(0, i) + 1) + 1
        elif kind == 0x0F:
            i += int.from_bytes(buf[i : i + 4], "little")
        elif kind in (0x06, 0x0A, 0x7F, 0xFF):
            pass
        else:
            raise ValueError(f"BSON type {kind:#x} not supported by the cloner")
    return size


@dataclass
class Template:
    """One document of one template ticket, ready to be copied."""

    service: str
    collection: str
    raw: bytes
    subs: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, token) to replace
    dates: list[int] = field(default_factory=list)
    oid: int | None = None

    def clone(self, remap: dict[bytes, bytes], shift_ms: int) -> RawBSONDocument:
        buf = bytearray(self.raw)
        for offset, token in self.subs:
            buf[offset : offset + len(token)] = remap[token]
        for offset in self.dates:
            value = int.from_bytes(buf[offset : offset + 8], "little", signed=True) - shift_ms
            buf[offset : offset + 8] = value.to_bytes(8, "little", signed=True)
        if self.oid is not None:
            buf[self.oid : self.oid + 12] = ObjectId().binary
        return RawBSONDocument(bytes(buf), RAW)


@dataclass
class Family:
    ticket_id: str
    tokens: set[bytes] = field(default_factory=set)
    docs: list[Template] = field(default_factory=list)


@dataclass
class TemplateSet:
    families: list[Family]
    skipped: Counter[str] = field(default_factory=Counter)  # "service.collection (why)" -> documents

    def per_ticket(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for family in self.families:
            out.update(f"{d.service}.{d.collection}" for d in family.docs)
        return out


def _runs(text: bytes) -> list[bytes]:
    return HEX_RUN.findall(text)


def build_templates(
    docs: Iterable[tuple[str, str, dict[str, Any]]], ticket_ids: list[str], event_subjects: dict[str, str]
) -> TemplateSet:
    """docs: (service, collection, document) of a platform that holds only the template tickets."""
    owner: dict[bytes, int] = {}
    families = [Family(t) for t in ticket_ids]
    index = {t: i for i, t in enumerate(ticket_ids)}
    for t, i in index.items():
        for run in _runs(t.encode()):
            owner[run] = i
    for event_id, subject in event_subjects.items():
        if subject in index:
            for run in _runs(event_id.encode()):
                owner.setdefault(run, index[subject])
    if not owner:
        raise RuntimeError("the template ticket ids hold no hex run to rewrite")
    out = TemplateSet(families)
    pending: list[tuple[str, str, dict[str, Any], bytes]] = []
    for service, collection, doc in docs:
        where = f"{service}.{collection}"
        if collection == "timers" and doc.get("state") in ACTIVE_TIMER_STATES:
            out.skipped[f"{where} (active timer)"] += 1
            continue
        if doc.get("outbox"):
            doc = {**doc, "outbox": []}
        pending.append((service, collection, doc, bson.encode(doc, codec_options=TZ)))
    for _ in range(6):  # ownership spreads through ids (ticket -> customer -> ...): a few rounds
        pattern = re.compile(b"|".join(re.escape(t) for t in sorted(owner, key=len, reverse=True)))
        left, changed = [], False
        for item in pending:
            service, collection, doc, raw = item
            found = {owner[m.group()] for m in pattern.finditer(raw)}
            if len(found) != 1:
                left.append(item)
                continue
            owner_of = found.pop()
            doc_id = doc.get("_id")
            if isinstance(doc_id, str):
                fresh = [r for r in _runs(doc_id.encode()) if not any(t in r or r in t for t in owner)]
                if not fresh and not pattern.search(doc_id.encode()):
                    left.append(item)  # an id without hex digits: a shared document (grid, technician...)
                    continue
                for run in fresh:
                    owner[run] = owner_of
                    changed = True
            elif not isinstance(doc_id, ObjectId):
                left.append(item)
                continue
            families[owner_of].docs.append(Template(service, collection, raw))
            changed = True
        pending = left
        if not changed:
            break
    for service, collection, _, _ in pending:
        out.skipped[f"{service}.{collection} (shared or not one ticket's)"] += 1
    for i, family in enumerate(families):
        family.tokens = {t for t, o in owner.items() if o == i}
        if not family.tokens:
            family.docs = []
            continue
        pattern = re.compile(b"|".join(re.escape(t) for t in sorted(family.tokens, key=len, reverse=True)))
        for tpl in family.docs:
            tpl.subs = [(m.start(), m.group()) for m in pattern.finditer(tpl.raw)]
            oids: list[int] = []
            _walk(tpl.raw, 0, tpl.dates, True, oids)
            tpl.oid = oids[0] if oids else None
    return out


@dataclass
class SeedReport:
    inserted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def seed(
    client: Any, databases: dict[str, str], templates: TemplateSet, n: int, *, days: float, chunk: int
) -> SeedReport:
    """Insert n clones of the template tickets into the service databases (service -> database name)."""
    report = SeedReport()
    families = [f for f in templates.families if f.docs]
    if not families:
        raise RuntimeError("no template ticket owns any document: nothing to clone")
    rnd = random.Random()
    buffers: dict[tuple[str, str], list[RawBSONDocument]] = defaultdict(list)
    inflight: dict[str, asyncio.Task[None]] = {}
    step_ms = int(days * 86_400_000 / max(n, 1))
    started = time.monotonic()

    async def insert(service: str, collection: str, docs: list[RawBSONDocument]) -> None:
        where = f"{service}.{collection}"
        try:
            await client[databases[service]][collection].insert_many(docs, ordered=False)
            report.inserted[where] += len(docs)  # (inserted_ids stays empty for raw BSON documents)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            report.inserted[where] += exc.details.get("nInserted", 0)
            report.duplicates[where] += sum(1 for e in errors if e.get("code") == 11000)
            others = [e for e in errors if e.get("code") != 11000]
            if others:
                raise RuntimeError(f"seeding {where} failed: {others[0]}") from None

    async def flush(service: str, collection: str) -> None:
        docs = buffers.pop((service, collection), [])
        if not docs:
            return
        previous = inflight.get(service)
        if previous is not None:
            await previous
        inflight[service] = asyncio.create_task(insert(service, collection, docs))

    progress_every = max(n // 10, 1)
    for c in range(n):
        family = families[c % len(families)]
        remap = {t: f"{rnd.getrandbits(4 * len(t)):0{len(t)}x}".encode() for t in family.tokens}
        shift_ms = 3_600_000 + c * step_ms
        for tpl in family.docs:
            key = (tpl.service, tpl.collection)
            buffers[key].append(tpl.clone(remap, shift_ms))
            if len(buffers[key]) >= chunk:
                await flush(*key)
        if (c + 1) % progress_every == 0:
            rate = (c + 1) / (time.monotonic() - started)
            print(f"    seeded {c + 1:,}/{n:,} tickets ({rate:,.0f} tickets/s)", flush=True)
    for key in list(buffers):
        await flush(*key)
    await asyncio.gather(*inflight.values())
    report.seconds = time.monotonic() - started
    return report
