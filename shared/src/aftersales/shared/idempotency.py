"""Idempotent consumers: apply an event's effect to one document at most once, keyed by the event id.

The ids of applied events live in the same document as the effect (`applied_events`), so "apply" and
"remember it was applied" are one atomic update. Every id is kept: dedupe never depends on a window (a
window lets an event redelivered after N newer ones apply twice). That bounds what it may be used for:
one aggregate (a ticket, a visit, a complaint, a work order), whose own events are few. A document that
every event touches (a KPI rollup) must not use it; see the metrics store's batch markers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Collection, merge_updates


async def apply_once(
    collection: Collection,
    doc_id: Any,
    event_id: str,
    update: Mapping[str, Any],
    *,
    upsert: bool = False,
    extra_filter: Mapping[str, Any] | None = None,
) -> bool:
    """Apply `update` to document `doc_id` unless `event_id` was applied; return True if it was applied now.

    With `upsert`, a missing document is created. `extra_filter` narrows the match (e.g. a state guard);
    a document that exists but does not match it is left unchanged and False is returned.

    A missing document is created with an insert, not an upsert: an upsert whose filter says more than
    `{_id: X}` finds no document, and FerretDB then evaluates that filter over the whole collection (a
    scan that grows with the history). An insert that collides means the document exists, and the
    guarded update (answered by `_id`) decides.
    """
    full = merge_updates(update, {"$push": {"applied_events": event_id}})
    query = {"_id": doc_id, "applied_events": {"$ne": event_id}, **(extra_filter or {})}
    created = inserted_form(doc_id, full) if upsert and not extra_filter else None
    if created is not None:
        try:
            await collection.insert_one(created)
            return True
        except DuplicateKeyError:
            pass  # it exists: the guarded update below decides
    try:
        result = await collection.update_one(query, full, upsert=upsert and created is None)
    except DuplicateKeyError:
        return False  # the document exists and already holds event_id (or fails extra_filter): nothing to do
    return result.modified_count == 1 or result.upserted_id is not None


def inserted_form(doc_id: Any, update: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the document an upsert of `update` would create, or None when it cannot tell (operators
    other than $set, $setOnInsert, $inc, $push and $addToSet, or dotted paths)."""
    doc: dict[str, Any] = {"_id": doc_id}
    for op, fields in update.items():
        if any("." in name for name in fields):
            return None
        if op in ("$set", "$setOnInsert", "$inc"):
            doc.update(fields)
        elif op in ("$push", "$addToSet"):
            for name, value in fields.items():
                each = value.get("$each") if isinstance(value, Mapping) else None
                doc[name] = list(each) if each is not None else [value]
        else:
            return None
    return doc
