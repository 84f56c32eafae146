"""The streamed blob store: what goes in comes back byte for byte whatever the pieces and sizes (around
the chunk boundaries), hashed and counted; a refused stream (too large, not its declared type, empty,
failing) leaves nothing stored; sniffing by magic numbers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aftersales.shared.blobs import CHUNK_BYTES, Blob, BlobStore, PayloadTooLarge, UnsupportedMediaType, sniff
from aftersales.shared.errors import InvalidRequest
from aftersales.shared.mongo import Database
from aftersales.shared.mongo_in_memory import InMemoryMongo

PNG_HEAD = b"\x89PNG\r\n\x1a\n"


def store() -> BlobStore:
    db = cast(Database, InMemoryMongo()["test"])
    return BlobStore(lambda: db, "chunks")


async def stream(data: bytes, cuts: Iterable[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(cuts)):
        if start < cut < len(data):
            yield data[start:cut]
            start = cut
    yield data[start:]


async def stored_ids(blobs: BlobStore) -> list[str]:
    return sorted([doc["_id"] async for doc in blobs.collection.find({}, {"_id": 1})])


async def read_back(blobs: BlobStore, blob: Blob) -> bytes:
    return b"".join([chunk async for chunk in blobs.chunks(blob)])


near_boundaries = st.sampled_from([1, 2, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1]).flatmap(
    lambda base: st.sampled_from([base, base + CHUNK_BYTES, base + 2 * CHUNK_BYTES])
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=near_boundaries, cuts=st.lists(st.integers(min_value=1, max_value=3 * CHUNK_BYTES + 1), max_size=6)
)
def test_round_trip_around_chunk_boundaries(size: int, cuts: list[int]) -> None:
    data = (PNG_HEAD + bytes(range(256)) * (size // 256 + 1))[:size]

    async def run() -> None:
        blobs = store()
        blob = await blobs.write(
            "B-1",
            stream(data, cuts),
            content_type="image/png",
            max_bytes=4 * CHUNK_BYTES,
            field="file",
            sniffed=size >= len(PNG_HEAD) + 4,
        )
        assert blob.size == size and blob.sha256 == hashlib.sha256(data).hexdigest()
        assert await stored_ids(blobs) == sorted(f"B-1:{n}" for n in range(-(-size // CHUNK_BYTES)))
        assert await read_back(blobs, blob) == data
        assert await blobs.sha256(blob) == blob.sha256
        moved = await blobs.move(blob, "P-1")
        assert await read_back(blobs, moved) == data and await blobs.delete(moved) == blob.chunk_count
        assert await stored_ids(blobs) == []

    asyncio.run(run())


async def test_refused_streams_leave_nothing() -> None:
    blobs = store()
    big = PNG_HEAD + b"\x00" * (3 * CHUNK_BYTES)
    with pytest.raises(PayloadTooLarge) as too_large:
        await blobs.write(
            "B-1",
            stream(big, [1000, CHUNK_BYTES + 7]),
            content_type="image/png",
            max_bytes=2 * CHUNK_BYTES,
            field="file",
        )
    assert too_large.value.status == 413 and too_large.value.field == "file"
    with pytest.raises(UnsupportedMediaType) as wrong_type:
        await blobs.write(
            "B-2",
            stream(b"%PDF-1.4" + b"x" * 100, [3]),
            content_type="image/png",
            max_bytes=CHUNK_BYTES,
            field="file",
        )
    assert wrong_type.value.status == 415 and wrong_type.value.field == "file"
    with pytest.raises(InvalidRequest):
        await blobs.write("B-3", stream(b"", []), content_type="image/png", max_bytes=10, field="file")

    async def failing() -> AsyncIterator[bytes]:
        yield PNG_HEAD + b"\x00" * (CHUNK_BYTES + 10)  # one chunk stored, then the client goes away
        raise ConnectionError("client disconnected")

    with pytest.raises(ConnectionError):
        await blobs.write("B-4", failing(), content_type="image/png", max_bytes=4 * CHUNK_BYTES, field="file")
    assert await stored_ids(blobs) == []


def test_sniffing_by_magic_numbers() -> None:
    assert sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "image/jpeg"
    assert sniff(PNG_HEAD + b"\x00\x00\x00\rIHDR") == "image/png"
    assert sniff(b"RIFF\x24\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"%PDF-1.7\n%\xe2\xe3") == "application/pdf"
    assert sniff(b"RIFF\x24\x00\x00\x00WAVEfmt ") is None
    assert sniff(b"GIF89a\x01\x00") is None and sniff(b"") is None
