"""PyMongo's async client API, the part the stores, the outbox and the timers use, over mongomock's
in-memory databases: the database of service-level tests (`aftersales.shared.testing`), never of a
running service or an integration test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import mongomock

from aftersales.shared.mongo import Document


class InMemoryMongo:
    """PyMongo's async client API (the part the stores use) over mongomock's in-memory databases.

    Every operation first yields to the event loop, as a real round trip does, so two handlers racing
    on one document interleave between their reads and writes; each operation itself is atomic, as a
    single-document write is on the server."""

    def __init__(self) -> None:
        self.sync: mongomock.MongoClient[Document] = mongomock.MongoClient(tz_aware=True)

    def __getitem__(self, name: str) -> _AsyncDatabase:
        return _AsyncDatabase(self.sync[name])

    def get_database(self, name: str) -> _AsyncDatabase:
        return self[name]

    @property
    def admin(self) -> _AsyncDatabase:
        return self["admin"]

    async def close(self) -> None:
        pass


class _Async:
    """Awaitable versions of a mongomock object's methods (attributes pass through)."""

    def __init__(self, sync: Any) -> None:
        self._sync = sync

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._sync, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return attr(*args, **kwargs)

        return call


class _AsyncDatabase(_Async):
    def __getitem__(self, name: str) -> _AsyncCollection:
        return _AsyncCollection(self._sync[name])

    def get_collection(self, name: str) -> _AsyncCollection:
        return self[name]


class _AsyncCollection(_Async):
    def find(self, *args: Any, **kwargs: Any) -> _AsyncCursor:
        return _AsyncCursor(self._sync.find(*args, **kwargs))

    async def bulk_write(self, requests: Sequence[Any], **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return self._sync.bulk_write([_SortFree(r) for r in requests], **kwargs)

    async def aggregate(self, pipeline: Sequence[Mapping[str, Any]], **kwargs: Any) -> _AsyncCursor:
        await asyncio.sleep(0)
        return _AsyncCursor(self._sync.aggregate(list(pipeline), **kwargs))


class _SortFree:
    """A bulk request handed to mongomock's builder, which predates the `sort` PyMongo 4.11+ passes."""

    def __init__(self, request: Any) -> None:
        self._request = request

    def _add_to_bulk(self, bulk: Any) -> None:
        def without_sort(method: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any, sort: Any = None, **kwargs: Any) -> None:
                assert sort is None, "a bulk write with sort is not supported in memory"
                method(*args, **kwargs)

            return call

        self._request._add_to_bulk(
            SimpleNamespace(**{n: without_sort(getattr(bulk, n)) for n in dir(bulk) if n.startswith("add_")})
        )


class _AsyncCursor:
    """An async cursor: chain `sort`/`limit`/`skip`, then `async for` or `await to_list()`."""

    def __init__(self, sync: Any) -> None:
        self._sync = sync

    def __getattr__(self, name: str) -> Callable[..., _AsyncCursor]:
        method = getattr(self._sync, name)  # sort, limit, skip, batch_size, hint, ...

        def chained(*args: Any, **kwargs: Any) -> _AsyncCursor:
            method(*args, **kwargs)
            return self

        return chained

    def __aiter__(self) -> _AsyncCursor:
        return self

    async def __anext__(self) -> Document:
        try:
            return cast(Document, next(self._sync))
        except StopIteration:
            raise StopAsyncIteration from None

    async def to_list(self, length: int | None = None) -> list[Document]:
        await asyncio.sleep(0)
        out: list[Document] = []
        for doc in self._sync:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    async def close(self) -> None:
        pass
