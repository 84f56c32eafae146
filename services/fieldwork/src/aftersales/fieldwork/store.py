"""Fieldwork's MongoDB access: the work-order copy (routing's and intake's facts), appointments, service
reports and spare-part stock, each document carrying its own outbox.

Every write that changes state and emits events is one single-document update, guarded by what the
decision was taken on (a version, the newest assignment applied, or a stock band); a lost guard returns
False and the caller reads and decides again. Hot paths select by `_id`; the two lists (a technician's
day, a ticket's reports and open appointments) have their indexes for MongoDB.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from aftersales.fieldwork.domain import (
    NOT_STARTED,
    Appointment,
    AppointmentStatus,
    Booker,
    Point,
    WorkOrder,
    WorkOrderStatus,
)
from aftersales.fieldwork.reports import (
    PartLine,
    PhotoFile,
    ReportStatus,
    ServiceReport,
    Signature,
    SignatureKind,
)
from aftersales.fieldwork.stock import Band, StockLevel, stock_id
from aftersales.shared.aggregate import Decision
from aftersales.shared.blobs import CHUNK_BYTES, Blob, BlobStore
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import RetryLater
from aftersales.shared.mongo import IndexSpec
from aftersales.shared.outbox import new_with_events, with_events
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/fieldwork"
WORK_ORDERS, APPOINTMENTS, REPORTS, STOCK = "work_orders", "appointments", "reports", "stock"
REPORT_PHOTOS = "report_photos"  # a photo's bytes in chunks, _id "<photo_id>:<n>"
PHOTO_CHUNK_BYTES = CHUNK_BYTES
OUTBOX_COLLECTIONS = [WORK_ORDERS, APPOINTMENTS, REPORTS, STOCK]
HIDDEN = {"outbox": 0}
ERASE_LIMIT = 1000  # a ticket has a handful of appointments and reports
ERASE_TRIES = 5  # a record still changing after these many guarded tries: retry later (503)
# Retention kinds (retention.py) and the hook that arms one: `noted(kind, record_id, at)` after a write
# that stores such personal data on a record (None: not wired).
APPOINTMENT_POINTS = "appointment_points"  # `_id` = appointment id
REPORT_SIGNATURE, REPORT_PHOTOS = "report_signature", "report_photos"  # `_id` = report id
Noted = Callable[[str, str, datetime], Awaitable[None]]
PERSONAL_POINTS = ("check_in_point", "check_out_point", "work_done")
_CHANGED = {"version": 1, "created_at": 1, "updated_at": 1}
_PERSONAL_PROJECTION = {**dict.fromkeys(PERSONAL_POINTS, 1), **_CHANGED}
_SIGNATURE_PROJECTION = {"signature": 1, **_CHANGED}
_PHOTOS_PROJECTION = {"photo_files": 1, "photos_erased_at": 1, "status": 1, **_CHANGED}

INDEXES = [
    IndexSpec(APPOINTMENTS, [("technician_id", 1), ("window_start", 1)]),
    IndexSpec(APPOINTMENTS, [("ticket_id", 1), ("status", 1)]),
    IndexSpec(REPORTS, [("ticket_id", 1), ("created_at", 1)]),
]


def _events(decision: Decision[Any], subject: str) -> list[CloudEvent]:
    return [new_event(m, source=SOURCE, subject=subject) for m in decision.events]


def last_change(doc: Mapping[str, Any]) -> datetime:
    """Return when a document was last written (its `updated_at`, else its `created_at`); erasures do not
    count (they move the version only)."""
    return doc.get("updated_at") or doc.get("created_at") or datetime.min.replace(tzinfo=UTC)


def _points_of(a: Appointment) -> tuple[Any, ...]:
    return (a.check_in_point, a.check_out_point, a.work_done)


def _has_points(doc: Mapping[str, Any]) -> bool:
    return any(doc.get(name) is not None for name in PERSONAL_POINTS)


def _has_signature(doc: Mapping[str, Any]) -> bool:
    return bool((doc.get("signature") or {}).get("data"))


@dataclass(frozen=True, slots=True)
class HeldPhotos:
    """A report's uploaded photos still held, as read (for an erasure guarded by the version)."""

    report_id: str
    files: tuple[PhotoFile, ...]
    signed: bool
    version: int | None
    last_change: datetime


class _Outboxed:
    """A collection whose documents carry their outbox: writes tell the relay which document to read."""

    collection_name: str

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.collection = runtime.db[self.collection_name]
        self.noted: Noted | None = None  # arms retention (see APPOINTMENT_POINTS, REPORT_*)

    async def _note(self, kind: str, record_id: str, stored: bool) -> None:
        """Arm the record's retention when a write `stored` personal data of `kind` on it (one `arm`:
        these writes are a technician's or a customer's requests, not hot paths)."""
        if stored and self.noted is not None:
            await self.noted(kind, record_id, datetime.now(UTC))

    async def _update(
        self, guard: Mapping[str, Any], update: Mapping[str, Any], events: Sequence[CloudEvent]
    ) -> bool:
        result = await self.collection.update_one(dict(guard), with_events(update, Topic.FIELDWORK, events))
        if result.modified_count != 1:
            return False
        if events:
            self.runtime.relay.notify(self.collection_name, guard["_id"])
        return True

    async def _insert(self, doc: dict[str, Any], events: Sequence[CloudEvent]) -> bool:
        try:
            await self.collection.insert_one(new_with_events(doc, Topic.FIELDWORK, events))
        except DuplicateKeyError:
            return False
        if events:
            self.runtime.relay.notify(self.collection_name, doc["_id"])
        return True


# ---------------------------------------------------------------- work orders


def work_order_from(doc: Mapping[str, Any]) -> WorkOrder:
    return WorkOrder(
        ticket_id=doc["_id"],
        status=WorkOrderStatus(doc.get("status", WorkOrderStatus.UNASSIGNED.value)),
        technician_id=doc.get("technician_id"),
        grid_id=doc.get("grid_id"),
        assignment_at=doc.get("assignment_at"),
        submitted_by=doc.get("submitted_by"),
        waiting_for=doc.get("waiting_for"),
        closed_at=doc.get("closed_at"),
        exists=True,
    )


class WorkOrderStore(_Outboxed):
    collection_name = WORK_ORDERS

    async def load(self, ticket_id: str) -> WorkOrder:
        doc = await self.collection.find_one({"_id": ticket_id}, HIDDEN)
        return WorkOrder(ticket_id) if doc is None else work_order_from(doc)

    async def remember_ticket(self, ticket_id: str, submitted_by: str | None) -> None:
        """Keep who opened the ticket (idempotent: the same event sets the same value)."""
        await self.collection.update_one(
            {"_id": ticket_id},
            {"$set": {"submitted_by": submitted_by, "updated_at": datetime.now(UTC)}},
            upsert=True,
        )

    async def close(self, ticket_id: str, at: datetime) -> None:
        """Mark the ticket closed at `at` (idempotent: the same event sets the same values)."""
        fields = {"status": WorkOrderStatus.CLOSED.value, "closed_at": at, "updated_at": datetime.now(UTC)}
        await self.collection.update_one({"_id": ticket_id}, {"$set": fields}, upsert=True)

    async def write_assignment(self, before: WorkOrder, after: WorkOrder) -> bool:
        """Write an assignment if the copy still holds what `before` read; False when it changed."""
        fields = {
            "status": after.status.value,
            "technician_id": after.technician_id,
            "grid_id": after.grid_id,
            "assignment_at": after.assignment_at,
            "updated_at": datetime.now(UTC),
        }
        if not before.exists:
            return await self._insert({"_id": after.ticket_id, **fields}, ())
        # `None` also matches a field not set yet (the ticket's facts may have arrived first).
        guard = {
            "_id": before.ticket_id,
            "assignment_at": before.assignment_at,
            "closed_at": before.closed_at,
        }
        return (await self.collection.update_one(guard, {"$set": fields})).modified_count == 1

    async def write(self, before: WorkOrder, decision: Decision[WorkOrder]) -> bool:
        """Write a work order's pending reason and its event, guarded by the reason it was read with."""
        after = decision.state
        update = {"$set": {"waiting_for": after.waiting_for, "updated_at": datetime.now(UTC)}}
        guard = {"_id": before.ticket_id, "waiting_for": before.waiting_for}
        return await self._update(guard, update, _events(decision, before.ticket_id))


# ---------------------------------------------------------------- appointments


def _point(doc: Mapping[str, Any] | None) -> Point | None:
    return None if not doc else Point(doc["lat"], doc["lon"])


def _point_doc(point: Point | None) -> dict[str, float] | None:
    return None if point is None else {"lat": point.lat, "lon": point.lon}


def appointment_from(doc: Mapping[str, Any]) -> Appointment:
    return Appointment(
        id=doc["_id"],
        ticket_id=doc["ticket_id"],
        technician_id=doc["technician_id"],
        window_start=doc["window_start"],
        window_end=doc["window_end"],
        status=AppointmentStatus(doc["status"]),
        booked_by=Booker(doc.get("booked_by", Booker.DESK.value)),
        reschedules=doc.get("reschedules", 0),
        departed_at=doc.get("departed_at"),
        checked_in_at=doc.get("checked_in_at"),
        check_in_point=_point(doc.get("check_in_point")),
        checked_out_at=doc.get("checked_out_at"),
        check_out_point=_point(doc.get("check_out_point")),
        work_done=doc.get("work_done"),
        no_show=doc.get("no_show"),
        calendar_checked=doc.get("calendar_checked", False),
        version=doc.get("version", 0),
    )


def _appointment_fields(a: Appointment) -> dict[str, Any]:
    return {
        "ticket_id": a.ticket_id,
        "technician_id": a.technician_id,
        "window_start": a.window_start,
        "window_end": a.window_end,
        "status": a.status.value,
        "booked_by": a.booked_by.value,
        "reschedules": a.reschedules,
        "departed_at": a.departed_at,
        "checked_in_at": a.checked_in_at,
        "check_in_point": _point_doc(a.check_in_point),
        "checked_out_at": a.checked_out_at,
        "check_out_point": _point_doc(a.check_out_point),
        "work_done": a.work_done,
        "no_show": a.no_show,
        "calendar_checked": a.calendar_checked,
    }


class AppointmentStore(_Outboxed):
    collection_name = APPOINTMENTS

    async def load(self, appointment_id: str) -> Appointment | None:
        doc = await self.collection.find_one({"_id": appointment_id}, HIDDEN)
        return None if doc is None else appointment_from(doc)

    async def create(self, decision: Decision[Appointment]) -> bool:
        a, now = decision.state, datetime.now(UTC)
        doc = {"_id": a.id, **_appointment_fields(a), "version": 1, "created_at": now, "updated_at": now}
        return await self._insert(doc, _events(decision, a.ticket_id))

    async def write(self, before: Appointment, decision: Decision[Appointment]) -> bool:
        after = decision.state
        update = {
            "$set": {**_appointment_fields(after), "updated_at": datetime.now(UTC)},
            "$inc": {"version": 1},
        }
        guard = {"_id": before.id, "version": before.version}
        if not await self._update(guard, update, _events(decision, before.ticket_id)):
            return False
        points = _points_of(after)
        await self._note(APPOINTMENT_POINTS, after.id, any(points) and points != _points_of(before))
        return True

    async def day(self, technician_id: str, start: datetime, end: datetime, limit: int) -> list[Appointment]:
        """Return a technician's appointments whose window starts in [start, end), by start."""
        query = {"technician_id": technician_id, "window_start": {"$gte": start, "$lt": end}}
        cursor = self.collection.find(query, HIDDEN, sort=[("window_start", 1), ("_id", 1)], limit=limit)
        return [appointment_from(doc) async for doc in cursor]

    async def erase_personal(self, ticket_id: str) -> int:
        """Remove where the customer was met and the work notes from a ticket's appointments (found
        through the `ticket_id` index); return how many had any."""
        query = {"ticket_id": ticket_id, "$or": [{name: {"$ne": None}} for name in PERSONAL_POINTS]}
        ids = [doc["_id"] async for doc in self.collection.find(query, {"_id": 1}, limit=ERASE_LIMIT)]
        return sum([await self.erase_appointment(appointment_id) for appointment_id in ids])

    async def erase_appointment(self, appointment_id: str, *, active_until: datetime | None = None) -> bool:
        """Remove where the customer was met (check-in and check-out points) and the notes on the work
        from one appointment; True when it had any. Guarded by the version (a writer holding an older
        read re-reads); with `active_until` (retention), only an appointment unchanged since then."""
        for _ in range(ERASE_TRIES):
            doc = await self.collection.find_one({"_id": appointment_id}, _PERSONAL_PROJECTION)
            if doc is None or not _has_points(doc):
                return False
            if active_until is not None and last_change(doc) > active_until:
                return False
            update = {"$set": dict.fromkeys(PERSONAL_POINTS), "$inc": {"version": 1}}
            guard = {"_id": appointment_id, "version": doc.get("version")}
            if (await self.collection.update_one(guard, update)).modified_count == 1:
                return True
        raise RetryLater(f"appointment {appointment_id} kept changing while its personal data was erased")

    async def points_activity(self, appointment_id: str) -> datetime | None:
        """Return when the appointment last changed; None when it holds no points or notes (left)."""
        doc = await self.collection.find_one({"_id": appointment_id}, _PERSONAL_PROJECTION)
        return None if doc is None or not _has_points(doc) else last_change(doc)

    async def of_ticket(self, ticket_id: str, limit: int) -> list[Appointment]:
        """Return a ticket's appointments, by window (through the `ticket_id` index; a handful)."""
        cursor = self.collection.find({"ticket_id": ticket_id}, HIDDEN, limit=limit)
        return sorted([appointment_from(doc) async for doc in cursor], key=lambda a: a.window_start)

    async def open_of_ticket(self, ticket_id: str) -> list[str]:
        """Return the ids of a ticket's appointments not started yet (a ticket has a handful)."""
        query = {"ticket_id": ticket_id, "status": {"$in": [s.value for s in NOT_STARTED]}}
        return [doc["_id"] async for doc in self.collection.find(query, {"_id": 1}, limit=100)]


# ---------------------------------------------------------------- service reports


def _signature_from(doc: Mapping[str, Any] | None) -> Signature | None:
    if not doc:
        return None
    return Signature(SignatureKind(doc["kind"]), base64.b64decode(doc["data"]), doc["signer_name"])


def report_from(doc: Mapping[str, Any]) -> ServiceReport:
    return ServiceReport(
        id=doc["_id"],
        ticket_id=doc["ticket_id"],
        technician_id=doc["technician_id"],
        appointment_id=doc.get("appointment_id"),
        work_performed=doc.get("work_performed", ""),
        resolution_code=doc.get("resolution_code"),
        photos=tuple(doc.get("photos", [])),
        parts=tuple(PartLine(**p) for p in doc.get("parts", [])),
        status=ReportStatus(doc["status"]),
        signature=_signature_from(doc.get("signature")),
        signed_at=doc.get("signed_at"),
        content_sha256=doc.get("content_sha256"),
        supersedes=doc.get("supersedes_report_id"),
        removed_lines=tuple(doc.get("removed_lines", [])),
        photo_files=tuple(PhotoFile(**p) for p in doc.get("photo_files", [])),
        photos_erased_at=doc.get("photos_erased_at"),
        version=doc.get("version", 0),
    )


def _report_fields(r: ServiceReport) -> dict[str, Any]:
    signature = r.signature
    return {
        "ticket_id": r.ticket_id,
        "technician_id": r.technician_id,
        "appointment_id": r.appointment_id,
        "work_performed": r.work_performed,
        "resolution_code": r.resolution_code,
        "photos": list(r.photos),
        "parts": [p.as_dict() for p in r.parts],
        "removed_lines": list(r.removed_lines),
        "photo_files": [p.as_dict() for p in r.photo_files],
        "status": r.status.value,
        "signature": None
        if signature is None
        else {
            "kind": signature.kind.value,
            "data": base64.b64encode(signature.data).decode(),
            "signer_name": signature.signer_name,
        },
        "signed_at": r.signed_at,
        "content_sha256": r.content_sha256,
        "supersedes_report_id": r.supersedes,
    }


class ReportStore(_Outboxed):
    collection_name = REPORTS

    async def load(self, report_id: str) -> ServiceReport | None:
        doc = await self.collection.find_one({"_id": report_id}, HIDDEN)
        return None if doc is None else report_from(doc)

    async def create(self, report: ServiceReport) -> None:
        now = datetime.now(UTC)
        await self._insert({"_id": report.id, **_report_fields(report), "version": 1, "created_at": now}, ())
        await self._note(REPORT_PHOTOS, report.id, bool(report.photo_files))  # a correction copies them

    async def write(self, before: ServiceReport, decision: Decision[ServiceReport]) -> bool:
        """Write the report if it is still the draft `before` read (a signed report is never written)."""
        update = {
            "$set": {**_report_fields(decision.state), "updated_at": datetime.now(UTC)},
            "$inc": {"version": 1},
        }
        guard = {"_id": before.id, "version": before.version, "status": ReportStatus.DRAFT.value}
        if not await self._update(guard, update, _events(decision, before.ticket_id)):
            return False
        after = decision.state
        await self._note(REPORT_SIGNATURE, after.id, after.signature is not None and before.signature is None)
        # The first photo arms the report; later changes move its activity on (the firing re-arms it).
        await self._note(REPORT_PHOTOS, after.id, bool(after.photo_files) and not before.photo_files)
        return True

    async def erase_signatures(self, ticket_id: str) -> int:
        """Remove the customer's signature from a ticket's reports (found through the `ticket_id` index);
        return how many had one."""
        query = {"ticket_id": ticket_id, "signature.data": {"$ne": ""}, "signature": {"$ne": None}}
        ids = [doc["_id"] async for doc in self.collection.find(query, {"_id": 1}, limit=ERASE_LIMIT)]
        return sum([await self.erase_signature(report_id) for report_id in ids])

    async def erase_signature(self, report_id: str, *, active_until: datetime | None = None) -> bool:
        """Remove the customer's signature (image or strokes, and the signer's name) from one report; True
        when it had one. The signature's SHA-256 and the report's content hash stay, as the record that a
        signed report existed; `signature_erased_at` says why it can no longer be shown. Guarded by the
        version; with `active_until` (retention), only a report unchanged since then."""
        for _ in range(ERASE_TRIES):
            doc = await self.collection.find_one({"_id": report_id}, _SIGNATURE_PROJECTION)
            if doc is None or not _has_signature(doc):
                return False
            if active_until is not None and last_change(doc) > active_until:
                return False
            update = {
                "$set": {
                    "signature.data": "",
                    "signature.signer_name": "",
                    "signature_erased_at": datetime.now(UTC),
                },
                "$inc": {"version": 1},
            }
            guard = {"_id": report_id, "version": doc.get("version")}
            if (await self.collection.update_one(guard, update)).modified_count == 1:
                return True
        raise RetryLater(f"report {report_id} kept changing while its signature was erased")

    async def signature_activity(self, report_id: str) -> datetime | None:
        """Return when the report last changed (signed, for a signed one); None without a signature."""
        doc = await self.collection.find_one({"_id": report_id}, _SIGNATURE_PROJECTION)
        return None if doc is None or not _has_signature(doc) else last_change(doc)

    async def with_photos(self, ticket_id: str) -> list[str]:
        """Return the ids of a ticket's reports holding uploaded photos (the `ticket_id` index)."""
        query = {"ticket_id": ticket_id, "photo_files": {"$ne": []}}
        return [doc["_id"] async for doc in self.collection.find(query, {"_id": 1}, limit=ERASE_LIMIT)]

    async def photos_held(self, report_id: str) -> HeldPhotos | None:
        """Return the report's uploaded photos still held (None when it has none, or they were erased)."""
        doc = await self.collection.find_one({"_id": report_id}, _PHOTOS_PROJECTION)
        if doc is None or not doc.get("photo_files") or doc.get("photos_erased_at"):
            return None
        files = tuple(PhotoFile(**p) for p in doc["photo_files"])
        signed = doc.get("status") == ReportStatus.SIGNED.value
        return HeldPhotos(report_id, files, signed, doc.get("version"), last_change(doc))

    async def photos_activity(self, report_id: str) -> datetime | None:
        """Return when the report last changed; None when it holds no uploaded photos (left)."""
        held = await self.photos_held(report_id)
        return None if held is None else held.last_change

    async def photos_erased(self, held: HeldPhotos) -> bool:
        """Record that the report's photos were deleted, if it is still the version `held` was read at: a
        signed report keeps their SHA-256 (what its signature covers) and gets `photos_erased_at`; a
        draft drops them, as if never uploaded. False when the report changed meanwhile."""
        fields: dict[str, Any] = (
            {"photos_erased_at": datetime.now(UTC)} if held.signed else {"photo_files": []}
        )
        guard = {"_id": held.report_id, "version": held.version}
        result = await self.collection.update_one(guard, {"$set": fields, "$inc": {"version": 1}})
        return result.modified_count == 1

    async def of_ticket(self, ticket_id: str, limit: int) -> list[ServiceReport]:
        cursor = self.collection.find({"ticket_id": ticket_id}, HIDDEN, sort=[("created_at", 1)], limit=limit)
        return [report_from(doc) async for doc in cursor]


class PhotoStore:
    """The bytes of uploaded photos in the shared streamed blob store (`aftersales.shared.blobs`): chunks
    of at most 255 KB keyed by `_id` ("<photo_id>:<n>"). An upload streams in under an upload id and,
    once its hash is known, moves to its photo id (the content's hash), so writing the same bytes again
    (a retry) ends in the same chunks."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.blobs = BlobStore(lambda: runtime.db, REPORT_PHOTOS)

    @property
    def collection(self) -> Any:
        return self.blobs.collection

    async def receive(
        self, upload_id: str, body: AsyncIterable[bytes], content_type: str, limit: int
    ) -> Blob:
        """Stream an upload into chunks under `upload_id`, hashing and counting it (413 past `limit`)."""
        return await self.blobs.write(
            upload_id, body, content_type=content_type, max_bytes=limit, field="photo"
        )

    async def keep(self, upload: Blob, photo_id: str) -> None:
        """Move a received upload to its photo id."""
        await self.blobs.move(upload, photo_id)

    async def discard(self, upload: Blob) -> None:
        """Delete a received upload that is not kept (the report has these bytes, or refused them)."""
        await self.blobs.delete(upload)

    def chunks(self, photo: PhotoFile) -> AsyncIterator[bytes]:
        """Yield the photo's stored bytes, chunk by chunk (stops at a missing chunk)."""
        return self.blobs.chunks(_blob(photo))

    async def sha256(self, photo: PhotoFile) -> str | None:
        """Return the SHA-256 of the photo's stored bytes; None when they are not all there."""
        return await self.blobs.sha256(_blob(photo))

    async def delete(self, photo: PhotoFile) -> int:
        """Delete the photo's bytes (its chunks, by `_id`); return how many chunks were there."""
        return await self.blobs.delete(_blob(photo))


def _blob(photo: PhotoFile) -> Blob:
    return Blob(photo.photo_id, photo.content_type, photo.size, photo.sha256)


# ---------------------------------------------------------------- stock


class StockStore(_Outboxed):
    collection_name = STOCK

    async def load(self, location_id: str, part_id: str) -> StockLevel:
        doc = await self.collection.find_one({"_id": stock_id(location_id, part_id)}, HIDDEN)
        if doc is None:
            return StockLevel(location_id, part_id)
        taking = frozenset(doc.get("taking") or {})
        return StockLevel(
            location_id,
            part_id,
            doc["on_hand"],
            doc.get("low_threshold", 0),
            True,
            taking,
            doc.get("unit_cost_cents"),
        )

    async def take(self, before: StockLevel, decision: Decision[StockLevel], within: Band, use: str) -> bool:
        """Decrement the stock if it still holds at least the quantity, lies in the decision's band and has
        not given parts to this use (a report line) yet; mark the use as taking them."""
        quantity = before.on_hand - decision.state.on_hand
        on_hand: dict[str, int] = {"$gte": within.low}
        if within.high is not None:
            on_hand["$lte"] = within.high
        guard = {
            "_id": before.id,
            "on_hand": on_hand,
            "low_threshold": within.threshold,
            f"taking.{use}": {"$exists": False},
        }
        update = {
            "$inc": {"on_hand": -quantity},
            "$set": {"updated_at": datetime.now(UTC), f"taking.{use}": quantity},
        }
        return await self._update(guard, update, _events(decision, before.id))

    async def taken(self, location_id: str, part_id: str, use: str) -> None:
        """Forget that a use is taking parts: its line is on its report (or its parts were returned)."""
        await self.collection.update_one(
            {"_id": stock_id(location_id, part_id)}, {"$unset": {f"taking.{use}": ""}}
        )

    async def put(self, before: StockLevel, decision: Decision[StockLevel]) -> bool:
        """Add received parts (an increment: concurrent receipts all count), setting the threshold. A
        receipt that moves the average unit cost is guarded by the stock and cost it was averaged with."""
        after = decision.state
        fields: dict[str, Any] = {"updated_at": datetime.now(UTC), "low_threshold": after.low_threshold}
        events = _events(decision, before.id)
        if not before.exists:
            doc = {"_id": before.id, "location_id": after.location_id, "part_id": after.part_id, **fields}
            doc.update(on_hand=after.on_hand, unit_cost_cents=after.unit_cost_cents)
            return await self._insert(doc, events)  # False when created meanwhile: read and decide again
        guard: dict[str, Any] = {"_id": before.id}
        if after.unit_cost_cents != before.unit_cost_cents:
            guard.update(on_hand=before.on_hand, unit_cost_cents=before.unit_cost_cents)
            fields["unit_cost_cents"] = after.unit_cost_cents
        update = {"$inc": {"on_hand": after.on_hand - before.on_hand}, "$set": fields}
        return await self._update(guard, update, events)
