"""Idempotent consumers: apply an event's effect to one document at most once, keyed by the event id.

The ids of applied events live in the same document as the effect (`applied_events`, the newest
`KEEP_APPLIED` kept), so "apply" and "remember it was applied" are one atomic update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.shared.mongo import Collection, merge_updates

KEEP_APPLIED = 500


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
    """
    full = merge_updates(
        update, {"$push": {"applied_events": {"$each": [event_id], "$slice": -KEEP_APPLIED}}}
    )
    query = {"_id": doc_id, "applied_events": {"$ne": event_id}, **(extra_filter or {})}
    try:
        result = await collection.update_one(query, full, upsert=upsert)
    except DuplicateKeyError:
        return False  # the document exists and already holds event_id (or fails extra_filter): nothing to do
    return result.modified_count == 1 or result.upserted_id is not None
