"""What every service holding personal data shares for PIPL data exports: the sealing of an answer to the
export's one-off public key (libsodium sealed boxes, PyNaCl), the packing of a service's records into
parts that fit a Kafka message, and the export ledger (each request chunk answered once, its parts in the
answer document's outbox: one write).

Plaintext personal data never reaches Kafka: an answer's records are sealed before they are written to the
outbox, and only intake, which keeps the private key in its own database, can open them. The ledger is
keyed by `_id` ("<export id>:<chunk>"): no query, no scan, on FerretDB too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from nacl.public import PrivateKey, PublicKey, SealedBox
from pymongo.errors import DuplicateKeyError

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import EXPORT_SEALED_MAX_CHARS, ExportAnswered, ExportRequested
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.outbox import new_with_events
from aftersales.shared.runtime import ServiceRuntime

EXPORT_ANSWERS = "export_answers"  # one per request chunk a service answered: `_id` = "<export id>:<chunk>"
SEAL_OVERHEAD_BYTES = 48  # a sealed box's ephemeral public key and MAC
PART_BYTES = (EXPORT_SEALED_MAX_CHARS // 4) * 3 - SEAL_OVERHEAD_BYTES - 1024  # plaintext of one part

Records = Mapping[str, Sequence[Mapping[str, Any]]]
"""A service's records of a customer, by kind (e.g. "visits": [...]), as plain JSON-able mappings."""


# ------------------------------------------------------------------------------------ sealing


@dataclass(frozen=True, slots=True)
class ExportKeys:
    """An export's key pair, base64: the public key goes out in the request, the private key stays."""

    private_key: str
    public_key: str

    @classmethod
    def generate(cls) -> ExportKeys:
        key = PrivateKey.generate()
        return cls(
            private_key=base64.b64encode(bytes(key)).decode(),
            public_key=base64.b64encode(bytes(key.public_key)).decode(),
        )


def seal(public_key: str, plaintext: bytes) -> str:
    """Return `plaintext` sealed to the base64 X25519 `public_key`, base64."""
    box = SealedBox(PublicKey(base64.b64decode(public_key)))
    return base64.b64encode(box.encrypt(plaintext)).decode()


def unseal(private_key: str, sealed: str) -> bytes:
    """Return the plaintext of a sealed answer (raises nacl's CryptoError when it was not sealed to it)."""
    box = SealedBox(PrivateKey(base64.b64decode(private_key)))
    return box.decrypt(base64.b64decode(sealed))


# ------------------------------------------------------------------------------------ packing


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def to_json(value: Any) -> bytes:
    """Return `value` as compact UTF-8 JSON (times as ISO 8601, bytes as base64)."""
    return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Part:
    counts: dict[str, int]
    plaintext: bytes  # {"records": {kind: [...]}} as JSON


def pack(records: Records, *, part_bytes: int = PART_BYTES) -> list[Part]:
    """Split a service's records into parts whose JSON fits `part_bytes` (always at least one part, whose
    counts name every kind, zero when there was none; a record too large for a part alone is replaced by a
    note of its size and id)."""
    parts: list[Part] = []
    current: dict[str, list[bytes]] = {}
    size = 0

    def close() -> None:
        nonlocal current, size
        body = b",".join(to_json(kind) + b":[" + b",".join(rows) + b"]" for kind, rows in current.items())
        parts.append(Part({k: len(v) for k, v in current.items()}, b'{"records":{' + body + b"}}"))
        current, size = {}, 0

    for kind, rows in records.items():
        for row in rows:
            encoded = to_json(row)
            if len(encoded) + 64 > part_bytes:
                encoded = to_json({"_id": row.get("_id") or row.get("id"), "omitted_bytes": len(encoded)})
            if size and size + len(encoded) + len(kind) + 64 > part_bytes:
                close()
            current.setdefault(kind, []).append(encoded)
            size += len(encoded) + len(kind) + 8
    if current or not parts:
        close()
    parts[0].counts.update({kind: 0 for kind in records if not any(kind in p.counts for p in parts)})
    return parts


# ------------------------------------------------------------------------------------ the ledger


Gather = Callable[[], Awaitable[Records]]


class ExportLedger:
    """A service's record of the export request chunks it answered. A chunk's answer (every part, sealed)
    is one insert of its ledger document with the events in its outbox, so a redelivered request finds
    the document and answers nothing more. The collection must be among the runtime's outbox
    collections (`EXPORT_ANSWERS`)."""

    def __init__(self, runtime: ServiceRuntime, *, service: str) -> None:
        self.runtime = runtime
        self.service = service
        self.answers = runtime.db[EXPORT_ANSWERS]

    async def answer(self, request: ExportRequested, gather: Gather) -> bool:
        """Answer a request chunk with the records `gather` returns, unless it was answered before; True
        when answered now."""
        doc_id = f"{request.export_id}:{request.chunk}"
        if await self.answers.find_one({"_id": doc_id}, {"_id": 1}) is not None:
            return False
        now = datetime.now(UTC)
        parts = pack(await gather())
        events = [self._event(request, n, len(parts), part, now) for n, part in enumerate(parts)]
        doc = {
            "_id": doc_id,
            "export_id": request.export_id,
            "customer_id": request.customer_id,
            "chunk": request.chunk,
            "parts": len(parts),
            "answered_at": now,
        }
        try:
            await self.answers.insert_one(new_with_events(doc, Topic.PRIVACY, events))
        except DuplicateKeyError:
            return False  # another replica answered this chunk meanwhile
        self.runtime.relay.notify(EXPORT_ANSWERS, doc_id)
        return True

    def _event(self, request: ExportRequested, n: int, parts: int, part: Part, now: datetime) -> CloudEvent:
        answered = ExportAnswered(
            export_id=request.export_id,
            customer_id=request.customer_id,
            service=self.service,
            chunk=request.chunk,
            chunks=request.chunks,
            part=n,
            parts=parts,
            counts=part.counts,
            sealed=seal(request.public_key, part.plaintext),
            answered_at=now,
        )
        return new_event(answered, source=f"/aftersales/{self.service}", subject=request.customer_id)
