"""MongoDB wiring on PyMongo's native async API: one client per process, one database per service.

Code here and in every store.py runs on real MongoDB and on FerretDB 1.x alike: single-document atomic
updates only (no multi-document transactions), no partial or TTL indexes, `$group` with `$sum` only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from aftersales.shared.settings import ServiceSettings

Document = dict[str, Any]
Database = AsyncDatabase[Document]
Collection = AsyncCollection[Document]


DB_COMMANDS = Counter(
    "aftersales_db_commands_total",
    "Database commands sent, by service, collection, command and whether its filter selects by _id "
    "alone (by_id=false: the store must evaluate another filter, a scan on FerretDB, an index on MongoDB)",
    ["service", "collection", "command", "by_id"],
)
DB_SECONDS = Counter(
    "aftersales_db_command_seconds_total",
    "Time spent waiting for database commands, by service, collection and command (as the driver saw "
    "it: queueing in the server included)",
    ["service", "collection", "command"],
)
UNCONFIRMED_WRITES = Counter(
    "aftersales_db_writes_unconfirmed_total",
    "Writes whose outcome the database never confirmed (the connection broke or timed out, or a write "
    "concern failed): the write may have landed with events its caller never handed to the outbox relay, "
    "so the relay sweeps after one",
    ["service"],
)
_WRITES = frozenset({"insert", "update", "delete", "findAndModify"})
_unconfirmed = 0  # this process's unconfirmed writes, read by the outbox relay


def unconfirmed_writes() -> int:
    """Return how many writes of this process the database never confirmed (see UNCONFIRMED_WRITES)."""
    return _unconfirmed


# Commands whose cost depends on a filter; everything else (insert, getMore, ping, ...) is by_id="n/a".
_FILTERED = {"find": "filter", "count": "query", "distinct": "query", "findAndModify": "query"}


def _selects_by_id(query: Any) -> bool:
    """True when a filter is `{_id: <value>}` plus nothing that needs another index."""
    return isinstance(query, Mapping) and "_id" in query and not isinstance(query["_id"], Mapping)


def _by_id_statement(statement: Mapping[str, Any]) -> bool:
    """An update or delete answered by `_id`: `{_id: X}`, or `{_id: X, ...}` without upsert (the local
    FerretDB front checks the other conditions on the document it reads by `_id`; an upsert that finds
    no document leaves the whole filter to the store, a scan on FerretDB)."""
    query = statement.get("q")
    if not isinstance(query, Mapping) or not _selects_by_id(query):
        return False
    return len(query) == 1 or not statement.get("upsert", False)


def filter_kind(command_name: str, command: Mapping[str, Any]) -> str:
    """Return "true"/"false" for commands with a filter (by _id or not), "n/a" for the others."""
    if command_name in _FILTERED:
        return str(_selects_by_id(command.get(_FILTERED[command_name]) or {})).lower()
    if command_name in ("update", "delete"):
        key = "updates" if command_name == "update" else "deletes"
        statements = command.get(key) or []
        return str(all(_by_id_statement(s) for s in statements)).lower()
    if command_name == "aggregate":
        return "false"
    return "n/a"


class CommandCounter(monitoring.CommandListener):
    """Counts every command a service sends, so tests and `make bench` can see the cost per ticket."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._running: dict[tuple[Any, int], str] = {}  # (server, request id) -> collection

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name in ("isMaster", "ismaster", "hello", "endSessions", "saslStart", "saslContinue"):
            return
        target = event.command.get(name)
        collection = target if isinstance(target, str) and name != "getMore" else ""
        if name == "getMore":
            collection = str(event.command.get("collection", ""))
        DB_COMMANDS.labels(self._service, collection, name, filter_kind(name, event.command)).inc()
        if len(self._running) > 10_000:  # a command without an outcome event would otherwise stay
            self._running.clear()
        self._running[(event.connection_id, event.request_id)] = collection

    def _timed(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        collection = self._running.pop((event.connection_id, event.request_id), None)
        if collection is not None:
            DB_SECONDS.labels(self._service, collection, event.command_name).inc(event.duration_micros / 1e6)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._timed(event)
        if event.command_name in _WRITES and "writeConcernError" in event.reply:
            self._unconfirmed()  # applied where it ran, not acknowledged as asked: the caller sees an error

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._timed(event)
        # A server's refusal carries its error `code` (nothing was written); a network error or timeout
        # carries the client exception's type instead, and the write may or may not have landed.
        if event.command_name in _WRITES and "errtype" in event.failure:
            self._unconfirmed()

    def _unconfirmed(self) -> None:
        global _unconfirmed
        _unconfirmed += 1
        UNCONFIRMED_WRITES.labels(self._service).inc()


def make_client(settings: ServiceSettings) -> AsyncMongoClient[Document]:
    """Return a client with timezone-aware datetimes, bounded timeouts and command counting."""
    timeout_ms = int(settings.mongodb_connect_timeout_s * 1000)
    return AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(),
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=int(settings.mongodb_socket_timeout_s * 1000),
        appname=f"aftersales-{settings.service_name}",
        event_listeners=[CommandCounter(settings.service_name)],
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
