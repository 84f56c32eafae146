"""Streamed file storage in the service's own database: photos, invoices and documents, written from an
async byte stream (Starlette's `request.stream()`) and read back as one, never held whole in memory.

A blob is stored in chunks of at most `CHUNK_BYTES` (255 KB, GridFS's default), each its own document
`{"_id": "<blob_id>:<n>", "blob_id", "n", "data"}`; what the blob is (id, type, size, SHA-256) is kept by
the owner of the blob (a ticket's attachment list, a service report) beside its other metadata.

Why not PyMongo's `gridfs.AsyncGridFSBucket` (the kept library for MongoDB's file storage): it reads a
file's chunks with `find({"files_id": id}).sort("n")` and deletes them with `{"files_id": id}`, served on
MongoDB by its unique `(files_id, n)` index. The platform may run on FerretDB, which pushes down only
`_id` filters: there every read or delete of a file would scan the whole chunks collection, the largest
collection a service has. Chunks keyed by `_id` are read and deleted one by one by `_id` on both
servers, and need no index at all. GridFS also adds a `files` document per blob (the owner keeps that
metadata already) and neither sniffs nor bounds what it is given.

While the stream is written it is hashed (SHA-256) and counted; past `max_bytes` reading stops and the
upload is refused (413 naming the field); its first bytes are compared with the declared Content-Type
(magic numbers of JPEG, PNG, WebP and PDF: 415 when they are something else). A refused or failed
upload deletes the chunks it wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

from aftersales.shared.errors import DomainError, InvalidRequest
from aftersales.shared.mongo import Database

__all__ = [
    "CHUNK_BYTES",
    "Blob",
    "BlobStore",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "declared_type",
    "sniff",
]

CHUNK_BYTES = 255 * 1024
SNIFF_BYTES = 12  # enough for every signature below (WebP's is at bytes 8-11)


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


def sniff(head: bytes) -> str | None:
    """Return the media type the first bytes of a file show (JPEG, PNG, WebP, PDF), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def declared_type(content_type: str, allowed: Collection[str], *, what: str, field: str) -> str:
    """Return the media type of a Content-Type header (parameters dropped); 415 naming `field` unless it
    is one of `allowed`."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in allowed:
        raise UnsupportedMediaType(
            f"{field}: {what} is one of {', '.join(sorted(allowed))}, not {media or 'missing'}", field=field
        )
    return media


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored blob: where its chunks are, what it is, and the SHA-256 of its bytes."""

    blob_id: str
    content_type: str
    size: int
    sha256: str

    @property
    def chunk_count(self) -> int:
        return -(-self.size // CHUNK_BYTES)


class BlobStore:
    """The chunks of one collection (`<blob_id>:<n>`), written from and read back as byte streams."""

    def __init__(self, database: Callable[[], Database], collection: str) -> None:
        self._database = database
        self.collection_name = collection

    @property
    def collection(self) -> Any:
        return self._database()[self.collection_name]

    async def write(
        self,
        blob_id: str,
        body: AsyncIterable[bytes],
        *,
        content_type: str,
        max_bytes: int,
        field: str,
        sniffed: bool = True,
    ) -> Blob:
        """Write a stream as blob `blob_id` and return it. 413 (naming `field`) once it passes
        `max_bytes`, 415 when its first bytes are not `content_type` (unless `sniffed` is False), 422 when
        it is empty; nothing is left stored when it is refused or the stream fails."""
        writer = _ChunkWriter(self, blob_id)
        digest, size, head = hashlib.sha256(), 0, b""
        try:
            async for piece in body:
                size += len(piece)
                if size > max_bytes:
                    raise PayloadTooLarge(f"{field}: larger than {max_bytes} bytes", field=field)
                if sniffed and len(head) < SNIFF_BYTES:  # checked before a byte is stored
                    head += piece[: SNIFF_BYTES - len(head)]
                    if len(head) == SNIFF_BYTES:
                        _check_type(head, content_type, field)
                digest.update(piece)
                await writer.add(piece)
            if size == 0:
                raise InvalidRequest(f"{field}: the body is empty", field=field)
            if sniffed and len(head) < SNIFF_BYTES:
                _check_type(head, content_type, field)
            await writer.flush()
        except BaseException:
            await self._delete_chunks(blob_id, writer.n)
            raise
        return Blob(blob_id, content_type, size, digest.hexdigest())

    async def chunks(self, blob: Blob) -> AsyncIterator[bytes]:
        """Yield the blob's stored bytes, chunk by chunk (stops at a missing chunk)."""
        for n in range(blob.chunk_count):
            doc = await self.collection.find_one({"_id": chunk_id(blob.blob_id, n)})
            if doc is None:
                return
            yield bytes(doc["data"])

    async def sha256(self, blob: Blob) -> str | None:
        """Return the SHA-256 of the blob's stored bytes; None when they are not all there."""
        digest, size = hashlib.sha256(), 0
        async for chunk in self.chunks(blob):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest() if size == blob.size else None

    async def delete(self, blob: Blob) -> int:
        """Delete the blob's chunks (by `_id`, one by one: no scan on any server); return how many."""
        return await self._delete_chunks(blob.blob_id, blob.chunk_count)

    async def _delete_chunks(self, blob_id: str, count: int) -> int:
        deleted = 0
        for n in range(count):
            deleted += (await self.collection.delete_one({"_id": chunk_id(blob_id, n)})).deleted_count
        return deleted

    async def move(self, blob: Blob, to_id: str) -> Blob:
        """Store the blob's chunks under `to_id` and delete the old ones, one chunk in memory at a time
        (a content-addressed blob gets its id, its hash, only once it has been read whole). Repeating a
        move that was interrupted completes it."""
        moved = Blob(to_id, blob.content_type, blob.size, blob.sha256)
        n = 0
        async for data in self.chunks(blob):
            await self._put(to_id, n, data)
            n += 1
        await self.delete(blob)
        return moved

    async def _put(self, blob_id: str, n: int, data: bytes) -> None:
        doc = {"blob_id": blob_id, "n": n, "data": data}
        await self.collection.replace_one({"_id": chunk_id(blob_id, n)}, doc, upsert=True)


def chunk_id(blob_id: str, n: int) -> str:
    return f"{blob_id}:{n}"


class _ChunkWriter:
    """Collects a stream's pieces into chunks of `CHUNK_BYTES` and stores each one as it fills: at most
    one chunk (and the piece being cut) is in memory."""

    def __init__(self, store: BlobStore, blob_id: str) -> None:
        self.store = store
        self.blob_id = blob_id
        self.buffer = bytearray()
        self.n = 0  # chunks stored

    async def add(self, piece: bytes) -> None:
        self.buffer += piece
        while len(self.buffer) >= CHUNK_BYTES:
            await self.store._put(self.blob_id, self.n, bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]
            self.n += 1

    async def flush(self) -> None:
        if self.buffer:
            await self.store._put(self.blob_id, self.n, bytes(self.buffer))
            self.buffer.clear()
            self.n += 1


def _check_type(head: bytes, declared: str, field: str) -> None:
    found = sniff(head)
    if found != declared:
        shown = found or "none of JPEG, PNG, WebP or PDF"
        raise UnsupportedMediaType(
            f"{field}: the bytes are {shown}, not the declared {declared}", field=field
        )
