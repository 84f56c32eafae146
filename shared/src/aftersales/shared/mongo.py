"""MongoDB wiring on PyMongo's native async API: one client per process, one database per service.

Code here and in every store.py runs on real MongoDB and on FerretDB 1.x alike: single-document atomic
updates only (no multi-document transactions), no partial or TTL indexes, `$group` with `$sum` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from aftersales.shared.settings import ServiceSettings

Document = dict[str, Any]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]


def make_client(settings: ServiceSettings) -> AsyncMongoClient[Document]:
    """Return a client with timezone-aware datetimes and bounded connection timeouts."""
    timeout_ms = int(settings.mongodb_connect_timeout_s * 1000)
    return AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        appname=f"aftersales-{settings.service_name}",
    )


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index a collection needs; created at start-up (idempotent)."""

    collection: str
    keys: Sequence[tuple[str, int]]
    unique: bool = False
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


async def ensure_indexes(db: Database, specs: Sequence[IndexSpec]) -> None:
    """Create every index in `specs` if missing."""
    for spec in specs:
        kwargs: dict[str, Any] = dict(spec.options)
        if spec.name:
            kwargs["name"] = spec.name
        await db[spec.collection].create_index(list(spec.keys), unique=spec.unique, **kwargs)


def merge_updates(*updates: Mapping[str, Any]) -> dict[str, Any]:
    """Return one MongoDB update document combining several, operator by operator."""
    merged: dict[str, Any] = {}
    for update in updates:
        for op, fields in update.items():
            target = merged.setdefault(op, {})
            overlap = set(target) & set(fields)
            if overlap:
                raise ValueError(f"update operator {op} sets {sorted(overlap)} twice")
            target.update(fields)
    return merged
