"""Routing's MongoDB access: grids, technicians (with their load), SLA policy and work orders.

A state change and its events are one update of one document (outbox). A technician's load changes only
through conditional updates that also record which work order holds the slot (`active_ids`), so a
replica that loses a race moves on, a redelivered event never takes a second slot, and a release is
idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from aftersales.routing import messages
from aftersales.routing.assignment import Presence, TechnicianLoad
from aftersales.routing.domain import OPEN_STATUSES, ServiceGrid, Status, Technician, WorkOrder
from aftersales.routing.field_holds import holds_of
from aftersales.routing.pool_store import POOL, POOL_INDEXES, PoolIndex
from aftersales.routing.sla import SlaPolicy, default_policy
from aftersales.routing.technicians_store import TECHNICIANS, Hint, TechnicianPresence, no_hint
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.desk import TechnicianStatus
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater
from aftersales.shared.idempotency import apply_once
from aftersales.shared.mongo import Database, IndexSpec
from aftersales.shared.outbox import new_with_events, with_events

GRIDS, POLICIES, WORK_ORDERS = "grids", "sla_policies", "work_orders"
QUEUE = "queue"  # a small index of queued work orders; the work order's status is the truth
OUTBOX_COLLECTIONS = [WORK_ORDERS, GRIDS, TECHNICIANS]
INDEXES = [
    IndexSpec(WORK_ORDERS, [("grid_id", 1), ("status", 1), ("priority_rank", 1), ("queued_at", 1)]),
    IndexSpec(WORK_ORDERS, [("technician_id", 1), ("status", 1)]),
    IndexSpec(WORK_ORDERS, [("status", 1)]),
    IndexSpec(TECHNICIANS, [("grid_id", 1)]),
    IndexSpec(TECHNICIANS, [("active_ids", 1)]),
    IndexSpec(QUEUE, [("grid_id", 1), ("priority_rank", 1), ("queued_at", 1)]),
    *POOL_INDEXES,
]
PENDING_WRITE_S = 60.0  # a queue entry whose work order is not written yet, younger than this, is kept
GRID_CACHE_S = 1.0
POLICY_CACHE_S = 1.0
TECHNICIAN_CACHE_S = 1.0  # dispatch ranks technicians as read at most this long ago (see technicians_in)
CONFIG_ATTEMPTS = 5  # concurrent changes of one grid or technician before the caller is told to retry

Configured = Callable[[int, datetime], CloudEvent]
"""The `grid-configured`/`technician-configured` event of a configuration's version, written at `now`:
built here, as only the write knows the version."""


def slot_key(ticket_id: str, round_: int) -> str:
    """Return the key a work order's round holds in a technician's `active_ids`."""
    return f"{ticket_id}#{round_}"


def ticket_of_slot(key: str) -> str:
    """Return the ticket whose work order a slot key (`slot_key`) was taken for."""
    return key.rpartition("#")[0]


@dataclass(frozen=True, slots=True)
class Guard:
    """What a work order must still be for a write to apply: its round, and optionally its status, its
    technician (`check_technician`; None means nobody), its grid, its pool offer and the generations of
    some SLA clocks."""

    round: int
    status: str | None = None
    technician_id: str | None = None
    check_technician: bool = False
    generations: Mapping[str, int] = field(default_factory=dict)
    # The armed timer of some SLA clocks as read (None: none armed). A fired threshold keeps its clock's
    # generation but moves its timer on, so a re-plan guarded by both never writes over a threshold
    # recorded since it read the work order (which would fire that threshold again).
    timer_ids: Mapping[str, str | None] = field(default_factory=dict)
    grid_id: str | None = None
    offer_no: int | None = None
    fieldwork_version: int | None = None

    def filter(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round}
        if self.status is not None:
            out["status"] = str(self.status)
        if self.check_technician:
            out["technician_id"] = self.technician_id
        out |= {f"sla.{clock}.generation": gen for clock, gen in self.generations.items()}
        out |= {f"sla.{clock}.timer_id": timer_id for clock, timer_id in self.timer_ids.items()}
        if self.grid_id is not None:
            out["grid_id"] = self.grid_id
        if self.offer_no is not None:
            out["offer_no"] = self.offer_no
        if self.fieldwork_version is not None:
            version = self.fieldwork_version
            # 0: none written yet (a round's start stores 0; documents from before the field have none)
            out["fieldwork.version"] = version if version else {"$in": [0, None]}
        return out


class TechnicianSlots(TechnicianPresence):
    """Technicians' slots: taken and given back by guarded writes, ranked from a copy kept a second."""

    async def technicians_in(self, grid_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the technician documents of some grids (with their load and held slots) as read at most
        TECHNICIAN_CACHE_S ago, with this process's own slot changes applied at once (read-only).

        Dispatch ranks candidates with them; the slot itself is taken by a guarded write (below
        capacity, available, not held for the work already), so a copy a moment old costs at most a
        failed reserve, which drops the copy. What another replica or process changed shows within the
        second (a capacity lowered there, too). The read is the whole collection: FerretDB evaluates a
        filter other than `_id` by decoding every document, and reading the technicians for every
        ticket was a quarter of the database's CPU on the dispatch path. A technician whose copy a
        guarded write found stale is read again alone, by `_id`, not with all the others: a technician's
        document holds his slots, so the whole collection grows with the held work (in a chaos run's
        drain, re-reading all of them after every failed or cut write was three reads a second, each
        over a second on a database at full CPU). A mark stays until the read that began after it is
        applied, so a caller never takes a copy another caller's read is still bringing up to date."""
        now = time.monotonic()
        marks = dict(self._stale_technicians or {})
        if self._technician_cache is None or now - self._technician_cache[0] >= TECHNICIAN_CACHE_S:
            docs = {d["_id"]: d async for d in self.technicians.find({}, {"outbox": 0})}
            self._technician_cache = (now, docs)
            self._read_again(marks)
        else:
            kept = self._technician_cache[1]
            for tech_id in sorted(marks):
                try:
                    doc = await self.technicians.find_one({"_id": tech_id}, {"outbox": 0})
                except BaseException:
                    self.forget_technicians()  # not read again: none of the copy is trusted
                    raise
                if doc is None:
                    kept.pop(tech_id, None)
                else:
                    kept[tech_id] = doc
                self._read_again({tech_id: marks[tech_id]})
        wanted = set(grid_ids)
        return [d for d in self._technician_cache[1].values() if d.get("grid_id") in wanted]

    def _took(self, tech_id: str, key: str, *, taken: bool) -> None:
        """Apply a slot this process took (or gave back) to the kept copy of the technician."""
        doc = self._kept(tech_id)
        if doc is None:
            return
        ids = list(doc.get("active_ids", []))
        if (key in ids) == taken:  # the copy was not what the guarded write found
            self.forget_technicians(tech_id)
            return
        doc["active_ids"] = [*ids, key] if taken else [k for k in ids if k != key]
        doc["active_work_orders"] = int(doc.get("active_work_orders", 0)) + (1 if taken else -1)

    async def reserve(self, tech_id: str, key: str, capacity: int, *, only_available: bool = True) -> bool:
        """Take one slot of a technician if he is below `capacity` (and, unless a supervisor overrides it,
        has not set himself busy, on a break or off meanwhile); atomic, so replicas never overfill."""
        try:
            taken = await self._reserve(tech_id, key, capacity, only_available=only_available)
        except BaseException:
            self.forget_technicians(tech_id)  # the write may have landed unseen
            raise
        if taken:
            self._took(tech_id, key, taken=True)
        else:
            self.forget_technicians(tech_id)
        return taken

    async def _reserve(self, tech_id: str, key: str, capacity: int, *, only_available: bool) -> bool:
        guard: dict[str, Any] = {
            "_id": tech_id,
            "active_work_orders": {"$lt": capacity},
            "active_ids": {"$ne": key},
        }
        if only_available:
            guard["status"] = {"$nin": [s.value for s in TechnicianStatus if s != TechnicianStatus.AVAILABLE]}
        result = await self.technicians.update_one(
            guard,
            {
                "$inc": {"active_work_orders": 1},
                "$push": {"active_ids": key},
                "$set": {"last_assigned_at": datetime.now(UTC)},
            },
        )
        return result.modified_count == 1

    async def release(self, tech_id: str, key: str) -> bool:
        """Give a slot back; True if it was held (idempotent)."""
        try:
            result = await self.technicians.update_one(
                {"_id": tech_id, "active_ids": key},
                {
                    "$inc": {"active_work_orders": -1},
                    "$pull": {"active_ids": key},
                    "$unset": {f"slot_at.{key}": ""},  # slots taken before times moved out of here
                },
            )
        except BaseException:
            self.forget_technicians(tech_id)
            raise
        if result.modified_count == 1:
            self._took(tech_id, key, taken=False)
        return result.modified_count == 1


class DirectoryStore(TechnicianSlots):
    """Grids, technicians (with their slots) and the SLA policy: what dispatch decides with."""

    def __init__(self, db: Database, hint: Hint = no_hint) -> None:
        self.db = db
        self.hint = hint  # tells the outbox relay which document just got events
        self.queue = db[QUEUE]
        self.pool = db[POOL]
        self.grids = db[GRIDS]
        self.technicians = db[TECHNICIANS]
        self.policies = db[POLICIES]
        self.work_orders = db[WORK_ORDERS]
        self._grid_cache: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._policy_cache: tuple[float, SlaPolicy] | None = None

    # ------------------------------------------------------------------ grids

    async def put_grid(self, grid: ServiceGrid) -> tuple[dict[str, Any], bool]:
        """Create or replace a grid's definition (its surge state is kept) with its `grid-configured`
        event; return it and whether new."""
        created = await self._put_config(
            GRIDS,
            grid.id,
            {"spec": grid.model_dump(mode="json")},
            lambda now: {"surge_on": False, "surge_trigger": None, "created_at": now},
            lambda version, now: messages.grid_configured(grid, version, now),
        )
        self._grid_cache = None
        return await self._grid(grid.id), created

    async def _put_config(
        self,
        collection: str,
        doc_id: str,
        fields: Mapping[str, Any],
        on_insert: Callable[[datetime], Mapping[str, Any]],
        configured: Configured,
    ) -> bool:
        """Write a grid's or technician's configuration and its event (the next `config_version`) in one
        update; return True when the document is new. A concurrent change makes it read and write again,
        so the versions other services order the copies by are distinct and in write order."""
        documents = self.db[collection]
        for _ in range(CONFIG_ATTEMPTS):
            before = await documents.find_one({"_id": doc_id}, {"config_version": 1})
            now = datetime.now(UTC)
            version = int((before or {}).get("config_version") or 0) + 1
            values = {**fields, "updated_at": now, "config_version": version}
            events = [configured(version, now)]
            if before is None:
                try:
                    doc = {"_id": doc_id, **values, **on_insert(now)}
                    await documents.insert_one(new_with_events(doc, Topic.ASSIGNMENTS, events))
                except DuplicateKeyError:
                    continue
            else:
                guard = {"_id": doc_id, "config_version": version - 1 if version > 1 else {"$in": [0, None]}}
                update = with_events({"$set": values}, Topic.ASSIGNMENTS, events)
                if (await documents.update_one(guard, update)).modified_count != 1:
                    continue
            self.hint(collection, doc_id)
            if collection == TECHNICIANS:
                self.forget_technicians()
            return before is None
        raise RetryLater(f"{collection} {doc_id} changed on each of {CONFIG_ATTEMPTS} attempts; try again")

    async def _grid(self, grid_id: str) -> dict[str, Any]:
        doc = await self.grids.find_one({"_id": grid_id})
        assert doc is not None
        return doc

    async def grid_doc(self, grid_id: str) -> dict[str, Any] | None:
        return await self.grids.find_one({"_id": grid_id}, {"outbox": 0})

    async def grid_docs(self, *, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Return every grid document by id, cached for a second (grids change rarely)."""
        now = time.monotonic()
        if not fresh and self._grid_cache and now - self._grid_cache[0] < GRID_CACHE_S:
            return self._grid_cache[1]
        docs = {d["_id"]: d async for d in self.grids.find({}, {"outbox": 0}).sort("_id", 1)}
        self._grid_cache = (now, docs)
        return docs

    async def set_surge(self, grid_id: str, *, on: bool, trigger: str, events: Sequence[CloudEvent]) -> bool:
        """Switch surge on/off unless it already is; return True when it changed."""
        result = await self.grids.update_one(
            {"_id": grid_id, "surge_on": not on},
            with_events(
                {"$set": {"surge_on": on, "surge_trigger": trigger, "surge_changed_at": datetime.now(UTC)}},
                Topic.ASSIGNMENTS,
                events,
            ),
        )
        self._grid_cache = None
        if result.modified_count == 1 and events:
            self.hint(GRIDS, grid_id)
        return result.modified_count == 1

    # ------------------------------------------------------------------ technicians

    async def put_technician(self, tech: Technician) -> tuple[dict[str, Any], bool]:
        """Create or replace a technician (his load is kept) with his `technician-configured` event (no
        name); return him and whether new."""
        created = await self._put_config(
            TECHNICIANS,
            tech.id,
            tech.model_dump(mode="json", exclude={"id"}),
            lambda _: {"active_work_orders": 0, "active_ids": [], "last_assigned_at": None},
            lambda version, now: messages.technician_configured(tech, version, now),
        )
        doc = await self.technicians.find_one({"_id": tech.id}, {"outbox": 0})
        assert doc is not None
        return doc, created

    async def technician_doc(self, tech_id: str) -> dict[str, Any] | None:
        return await self.technicians.find_one({"_id": tech_id}, {"outbox": 0})

    async def technician_docs(self, grid_id: str | None = None) -> list[dict[str, Any]]:
        query = {"grid_id": grid_id} if grid_id else {}
        return [d async for d in self.technicians.find(query, {"outbox": 0}).sort("_id", 1)]

    async def held_slots(self) -> list[tuple[str, str]]:
        """Return (technician, slot key) of every slot held (technicians are a small collection)."""
        return [
            (doc["_id"], key)
            async for doc in self.technicians.find({}, {"active_ids": 1})
            for key in doc.get("active_ids", [])
        ]

    # ------------------------------------------------------------------ SLA policy

    async def policy(self) -> tuple[SlaPolicy, int]:
        doc = await self.policies.find_one({"_id": "current"})
        if doc is None:
            return default_policy(), 0
        fields = {k: doc[k] for k in ("targets", "pause_on") if k in doc}  # pause_on came later
        return SlaPolicy.model_validate(fields), int(doc["version"])

    async def cached_policy(self) -> SlaPolicy:
        """Return the policy, re-read at most every POLICY_CACHE_S (a change re-plans open clocks)."""
        now = time.monotonic()
        if self._policy_cache is None or now - self._policy_cache[0] >= POLICY_CACHE_S:
            self._policy_cache = (now, (await self.policy())[0])
        return self._policy_cache[1]

    async def put_policy(self, policy: SlaPolicy) -> int:
        doc = await self.policies.find_one_and_update(
            {"_id": "current"},
            {
                "$set": {**policy.model_dump(mode="json"), "updated_at": datetime.now(UTC)},
                "$inc": {"version": 1},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        self._policy_cache = None
        return int(doc["version"])


class RoutingStore(DirectoryStore, PoolIndex):
    """The directory plus the work orders (with their outbox), the queue index and the pool index."""

    async def work_order(self, ticket_id: str) -> dict[str, Any] | None:
        """Return a work order's document as stored (for reads), or None."""
        return await self.work_orders.find_one({"_id": ticket_id}, {"outbox": 0, "applied_events": 0})

    async def load_work_order(self, ticket_id: str) -> WorkOrder | None:
        """Return a work order, or None."""
        doc = await self.work_order(ticket_id)
        return None if doc is None else work_order_of(doc)

    async def insert_work_order(self, doc: Mapping[str, Any], events: Sequence[CloudEvent]) -> bool:
        """Insert a new work order with its events; False if it already exists."""
        try:
            await self.work_orders.insert_one(new_with_events(doc, Topic.ASSIGNMENTS, events))
        except DuplicateKeyError:
            return False
        if events:
            self.hint(WORK_ORDERS, doc["_id"])
        return True

    async def update_work_order(
        self,
        ticket_id: str,
        guard: Mapping[str, Any],
        update: Mapping[str, Any],
        events: Sequence[CloudEvent],
    ) -> bool:
        """Apply `update` and append `events` if the work order still matches `guard`; True if it did."""
        result = await self.work_orders.update_one(
            {"_id": ticket_id, **guard}, with_events(update, Topic.ASSIGNMENTS, events)
        )
        if result.modified_count == 1 and events:
            self.hint(WORK_ORDERS, ticket_id)
        return result.modified_count == 1

    async def write_work_order(
        self,
        ticket_id: str,
        guard: Guard,
        changes: Mapping[str, Any],
        events: Sequence[CloudEvent] = (),
        *,
        add_pause: Mapping[str, Any] | None = None,
    ) -> bool:
        """Set `changes` (field paths such as `sla.resolution.timer_id`) and append `events`, and the
        ended pause `add_pause` if given, if the work order still matches `guard`; True if it did."""
        update: dict[str, Any] = {"$set": dict(changes)}
        if add_pause is not None:
            update["$push"] = {"pauses": dict(add_pause)}
        return await self.update_work_order(ticket_id, guard.filter(), update, events)

    async def record_threshold(
        self,
        ticket_id: str,
        timer_id: str,
        *,
        round_: int,
        clock: str,
        generation: int,
        pct: int,
        changes: Mapping[str, Any],
        events: Sequence[CloudEvent],
    ) -> bool:
        """Record a fired SLA threshold once per timer (keyed by its id) while the clock still stands at
        that generation and threshold; True if this call applied it."""
        applied = await apply_once(
            self.work_orders,
            ticket_id,
            timer_id,
            with_events({"$set": dict(changes)}, Topic.ASSIGNMENTS, events),
            extra_filter={
                "round": round_,
                f"sla.{clock}.generation": generation,
                f"sla.{clock}.next_pct": pct,
            },
        )
        if applied:
            self.hint(WORK_ORDERS, ticket_id)
        return applied

    async def enqueue(
        self, ticket_id: str, *, grid_id: str, round_: int, priority_rank: int, queued_at: datetime
    ) -> None:
        """Add a queued work order to its grid's queue index (idempotent)."""
        await self.queue.update_one(
            {"_id": ticket_id},
            {
                "$set": {
                    "grid_id": grid_id,
                    "round": round_,
                    "priority_rank": priority_rank,
                    "queued_at": queued_at,
                }
            },
            upsert=True,
        )

    async def dequeue(self, ticket_id: str) -> None:
        await self.queue.delete_one({"_id": ticket_id})

    async def queued(self, grid_id: str, limit: int) -> list[WorkOrder]:
        """Return the queued work orders of a grid: priority first, then age (stale entries dropped)."""
        entries = [
            e
            async for e in self.queue.find({"grid_id": grid_id})
            .sort([("priority_rank", 1), ("queued_at", 1)])
            .limit(limit)
        ]
        out = []
        cutoff = datetime.now(UTC) - timedelta(seconds=PENDING_WRITE_S)
        for entry in entries:
            wo = await self.work_order(entry["_id"])
            if wo is None or wo["round"] < entry["round"]:
                # The entry is written before its work order: a dispatch may still be writing it; only
                # an old one is what a crash left behind.
                if entry["queued_at"] > cutoff:
                    continue
            elif wo["round"] == entry["round"] and wo["status"] == Status.QUEUED:
                if wo["grid_id"] == grid_id:
                    out.append(work_order_of(wo))
                else:
                    # Transferred by hand to another grid, and a crash or a lost race left the entry
                    # behind: it follows the work order to the grid it waits in now.
                    await self.queue.update_one(
                        {"_id": entry["_id"], "round": entry["round"]}, {"$set": {"grid_id": wo["grid_id"]}}
                    )
                continue
            await self.queue.delete_one({"_id": entry["_id"], "round": entry["round"]})
        return out

    async def queued_everywhere(self) -> list[WorkOrder]:
        """Return every queued work order (the reconciler's full pass: the queue index is as small as the
        queued work; each entry's work order read by `_id`, stale entries skipped)."""
        out = []
        async for entry in self.queue.find({}):
            wo = await self.work_order(entry["_id"])
            if wo is not None and wo["round"] == entry["round"] and wo["status"] == Status.QUEUED:
                out.append(work_order_of(wo))
        return out

    async def queue_length(self, grid_id: str) -> int:
        return await self.queue.count_documents({"grid_id": grid_id})

    async def queue_lengths(self) -> dict[str, int]:
        pipeline: list[dict[str, Any]] = [{"$group": {"_id": "$grid_id", "n": {"$sum": 1}}}]
        return {d["_id"]: int(d["n"]) async for d in await self.queue.aggregate(pipeline)}

    async def open_by_grid_and_region(self) -> dict[tuple[str, str], int]:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"status": {"$in": [s.value for s in OPEN_STATUSES]}}},
            {"$group": {"_id": {"grid": "$grid_id", "region": "$facts.region_code"}, "n": {"$sum": 1}}},
        ]
        return {
            (d["_id"]["grid"], d["_id"]["region"]): int(d["n"])
            async for d in await self.work_orders.aggregate(pipeline)
        }

    async def find_work_orders(
        self,
        *,
        technician_id: str | None = None,
        grid_id: str | None = None,
        status: str | None = None,
        open_only: bool = False,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Return work orders, most recently updated first; `status` wins over `open_only`."""
        query: dict[str, Any] = {}
        if technician_id:
            query["technician_id"] = technician_id
        if grid_id:
            query["grid_id"] = grid_id
        if status:
            query["status"] = status
        elif open_only:
            query["status"] = {"$in": [s.value for s in OPEN_STATUSES]}
        cursor = (
            self.work_orders.find(query, {"outbox": 0, "applied_events": 0})
            .sort([("updated_at", -1)])
            .limit(limit)
        )
        return [d async for d in cursor]

    async def open_work_orders(self, grid_id: str | None = None) -> list[WorkOrder]:
        """Return the open work orders, of one grid or all."""
        q: dict[str, Any] = {"status": {"$in": [s.value for s in OPEN_STATUSES]}}
        if grid_id is not None:
            q["grid_id"] = grid_id
        return [work_order_of(d) async for d in self.work_orders.find(q, {"outbox": 0, "applied_events": 0})]


def work_order_of(doc: Mapping[str, Any]) -> WorkOrder:
    return WorkOrder(
        ticket_id=doc["_id"],
        round=int(doc["round"]),
        status=Status(doc["status"]),
        grid_id=doc["grid_id"],
        facts=doc["facts"],
        priority_rank=int(doc["priority_rank"]),
        started_at=doc["started_at"],
        sla=doc.get("sla", {}),
        pauses=list(doc.get("pauses", [])),
        paused_since=doc.get("paused_since"),
        technician_id=doc.get("technician_id"),
        technician_grid_id=doc.get("technician_grid_id"),
        tier=doc.get("tier"),
        via=doc.get("via"),
        exclude=list(doc.get("exclude", [])),
        escalation_level=doc.get("escalation_level"),
        escalation_due=bool(doc.get("escalation_due")),
        offer_no=int(doc.get("offer_no") or 0),
        declined=list(doc.get("declined") or []),
        fieldwork=holds_of(doc.get("fieldwork")),
    )


def load_of(doc: Mapping[str, Any]) -> TechnicianLoad:
    return TechnicianLoad(
        technician=technician_of(doc),
        active_work_orders=int(doc.get("active_work_orders", 0)),
        last_assigned_at=doc.get("last_assigned_at"),
        presence=presence_of(doc),
    )


def presence_of(doc: Mapping[str, Any]) -> Presence:
    """Return a technician's own status (available until he sets one) and his last heartbeat."""
    return Presence(
        status=TechnicianStatus(doc.get("status") or TechnicianStatus.AVAILABLE),
        last_heartbeat_at=doc.get("last_heartbeat_at"),
    )


def technician_of(doc: Mapping[str, Any]) -> Technician:
    fields = {k: v for k, v in doc.items() if k in Technician.model_fields and k != "id"}
    if isinstance(fields.get("shift"), dict):
        fields["shift"] = {int(k): v for k, v in fields["shift"].items()}
    return Technician.model_validate({"id": doc["_id"], **fields})


def grid_of(doc: Mapping[str, Any]) -> ServiceGrid:
    spec = dict(doc["spec"])
    calendar = dict(spec["calendar"])
    calendar["weekly"] = {int(k): v for k, v in calendar["weekly"].items()}
    spec["calendar"] = calendar
    return ServiceGrid.model_validate(spec)
