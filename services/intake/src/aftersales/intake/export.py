"""PIPL data export (个人信息副本) at intake: a customer's data from every service that holds some,
assembled from their sealed answers to one request. Its routes, its use cases, intake's own answer, and
its subscription to `aftersales.privacy.v1`.

A request is one write: the export (with a one-off X25519 private key, kept here and never in an event)
and its `export-requested` events (the customer's ticket ids in chunks, and the public key) in its
outbox. Every holder (intake itself too) answers each chunk with `export-answered` events whose records
are sealed to the public key, so no plaintext personal data is on Kafka. Intake keeps the sealed parts by
`_id` and opens them only when an administrator downloads the complete export (logged in the customer's
access log). The private key and the parts are deleted when the export expires (a durable timer).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, status
from nacl.exceptions import CryptoError
from pydantic import BaseModel, Field

from aftersales.intake import privacy as privacy_api
from aftersales.intake.export_store import EXPORT_REQUESTS, ExportStore, part_marker
from aftersales.intake.privacy_store import PrivacyStore
from aftersales.intake.store import TicketStore
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.privacy import (
    EXPORT_CHUNK_TICKETS,
    ExportAnswered,
    ExportRequested,
    in_chunks,
)
from aftersales.shared.envelope import CloudEvent, PoisonEvent, new_event
from aftersales.shared.errors import DomainError, NotFound
from aftersales.shared.export import EXPORT_ANSWERS, ExportKeys, ExportLedger, Records, unseal
from aftersales.shared.kafka import subscribe
from aftersales.shared.roles import Admin, service_of
from aftersales.shared.routes import EventRoutes
from aftersales.shared.runtime import ServiceRuntime
from aftersales.shared.timers import Timer

log = logging.getLogger("aftersales.intake.export")

SOURCE = "/aftersales/intake"
EXPORT_EXPIRY = "export_expiry"  # the timer kind (stored with each timer: renaming it orphans them)
MAX_EXPORTED_TICKETS = 10_000  # a customer's tickets an export names (200 chunks at most)
CONVERSATION_ENTRIES = 500  # of each ticket's conversation in intake's answer
OUTBOX_COLLECTIONS = (EXPORT_REQUESTS, EXPORT_ANSWERS)  # the requests' events, intake's own answers
NOT_EXPORTED = ("outbox", "applied_events", "version", "last_appended", "timeline_seq", "downstream_until")


class Gone(DomainError):
    status = 410
    code = "gone"


class Exports:
    """Export requests, the collection of the services' sealed answers, and their expiry."""

    def __init__(
        self,
        store: ExportStore,
        *,
        tickets: TicketStore,
        privacy: PrivacyStore,
        ledger: ExportLedger,
        expected: tuple[str, ...],
        ttl: timedelta,
    ) -> None:
        self.store = store
        self.tickets = tickets
        self.privacy = privacy
        self.ledger = ledger
        self.expected = expected
        self.ttl = ttl

    async def request(self, customer_id: str, *, by: str) -> dict[str, Any]:
        """Record an export request, its key pair and its events; return the request. 404 for a customer
        intake does not know."""
        if await self.tickets.customer(customer_id) is None:
            raise NotFound(f"customer {customer_id} not found")
        now = datetime.now(UTC)
        expires_at = now + self.ttl
        export_id = f"EX-{uuid.uuid4().hex[:16]}"
        keys = ExportKeys.generate()
        ticket_ids = await self.privacy.customer_ticket_ids(customer_id, MAX_EXPORTED_TICKETS)
        chunks = in_chunks(ticket_ids, EXPORT_CHUNK_TICKETS)
        events = [
            new_event(
                ExportRequested(
                    export_id=export_id,
                    customer_id=customer_id,
                    ticket_ids=chunk,
                    chunk=n,
                    chunks=len(chunks),
                    public_key=keys.public_key,
                    requested_at=now,
                ),
                source=SOURCE,
                subject=customer_id,
            )
            for n, chunk in enumerate(chunks)
        ]
        doc = {
            "_id": export_id,
            "customer_id": customer_id,
            "requested_by": by,
            "requested_at": now,
            "expires_at": expires_at,
            "tickets": len(ticket_ids),
            "chunks": len(chunks),
            "expected": list(self.expected),
            "private_key": keys.private_key,
            "expired_at": None,
        }
        await self.store.arm_expiry(export_id, EXPORT_EXPIRY, expires_at)  # before: see timers.py
        await self.store.add(doc, events)
        return doc

    async def export(self, customer_id: str, export_id: str) -> dict[str, Any]:
        """Return an export's progress and, once every expected service answered, its data opened and
        assembled per service. 404 when there is none for the customer, 410 once it expired."""
        doc = await self.store.get(export_id)
        if doc is None or doc["customer_id"] != customer_id:
            raise NotFound(f"export {export_id} of customer {customer_id} not found")
        if doc.get("expired_at"):
            raise Gone(f"export {export_id} expired at {doc['expired_at'].isoformat()}: request a new one")
        progress = doc.get("progress") or {}
        answered = {
            svc: dict(p.get("counts") or {}) for svc, p in progress.items() if _answered(p, doc["chunks"])
        }
        pending = [svc for svc in doc["expected"] if svc not in answered]
        data = None if pending else await self._assemble(doc)
        return {**doc, "answered": answered, "pending": pending, "complete": not pending, "data": data}

    async def _assemble(self, doc: Mapping[str, Any]) -> dict[str, dict[str, list[Any]]]:
        data: dict[str, dict[str, list[Any]]] = {}
        for marker in sorted(doc.get("applied_events", []), key=_marker_order):
            part = await self.store.part(doc["_id"], marker)
            if part is None:
                continue
            records = json.loads(unseal(doc["private_key"], part["sealed"]))["records"]
            for kind, rows in records.items():
                data.setdefault(part["service"], {}).setdefault(kind, []).extend(rows)
        return data

    async def on_export_answered(self, answered: ExportAnswered, _: CloudEvent) -> None:
        doc = await self.store.get(answered.export_id)
        if doc is None or doc.get("expired_at") or doc["customer_id"] != answered.customer_id:
            log.info("an export answer for no open export dropped", extra={"export": answered.export_id})
            return
        try:
            unseal(doc["private_key"], answered.sealed)
        except (CryptoError, ValueError) as exc:
            raise PoisonEvent(f"export answer of {answered.service} not sealed to the export's key") from exc
        if not await self.store.collect(answered):
            again = await self.store.get(answered.export_id)
            if again is None or again.get("expired_at"):  # it expired meanwhile: keep nothing of it
                await self.store.forget_part(answered.export_id, part_marker(answered))

    async def on_expiry(self, timer: Timer) -> None:
        """Delete an expired export's private key and its sealed answers (the request stays, without them)."""
        export_id = str(timer.payload["export_id"])
        for marker in await self.store.expire(export_id, datetime.now(UTC)):
            await self.store.forget_part(export_id, marker)

    # ------------------------------------------------------------ intake's own answer

    async def on_export_requested(self, request: ExportRequested, _: CloudEvent) -> None:
        await self.ledger.answer(request, lambda: self._records(request))

    async def _records(self, request: ExportRequested) -> Records:
        """The customer's record, products and preferences (with the first chunk), and the chunk's tickets
        with their conversations."""
        records: dict[str, list[Mapping[str, Any]]] = {}
        if request.chunk == 0:
            profile = await self.tickets.customer(request.customer_id)
            preferences = await self.privacy.preferences(request.customer_id)
            records["customer"] = [_exported(profile)] if profile else []
            records["products"] = list(await self.tickets.customer_products(profile)) if profile else []
            records["contact_preferences"] = [_exported(preferences)] if preferences else []
        records["tickets"], records["conversations"] = [], []
        for ticket_id in request.ticket_ids:
            doc = await self.tickets.get(ticket_id)
            ticket = await self.tickets.load(ticket_id)
            if doc is None or ticket is None or doc.get("customer_id") != request.customer_id:
                continue
            records["tickets"].append(_exported(doc))
            entries, _ = await self.tickets.conversation(
                ticket, start=0, limit=CONVERSATION_ENTRIES, shown=lambda _: True
            )
            records["conversations"].append({"ticket_id": ticket_id, "entries": entries})
        return records


def _answered(progress: Mapping[str, Any], chunks: int) -> bool:
    """True when a service answered every chunk with every part."""
    parts_in, parts_due = int(progress.get("parts_in", 0)), int(progress.get("parts_due", 1))
    return int(progress.get("chunks_in", 0)) >= chunks and parts_in >= parts_due


def _marker_order(marker: str) -> tuple[str, int, int]:
    service, chunk, part = marker.rsplit(":", 2)
    return service, int(chunk), int(part)


def _exported(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in NOT_EXPORTED}


class ExportSettings(Protocol):
    export_answering_services: list[str]
    export_ttl_days: float


def wire(
    runtime: ServiceRuntime, tickets: TicketStore, privacy: PrivacyStore, settings: ExportSettings
) -> Exports:
    """Construct intake's exports and subscribe them (requests, answers, expiry)."""
    exports = Exports(
        ExportStore(runtime),
        tickets=tickets,
        privacy=privacy,
        ledger=ExportLedger(runtime, service="intake"),
        expected=tuple(settings.export_answering_services),
        ttl=timedelta(days=settings.export_ttl_days),
    )
    register(runtime, exports)
    return exports


def register(runtime: ServiceRuntime, exports: Exports) -> None:
    """Subscribe intake to export requests (its own answer) and answers (collected), and expire exports."""
    routes = EventRoutes(
        {ExportRequested: exports.on_export_requested, ExportAnswered: exports.on_export_answered}
    )
    group = f"aftersales-{runtime.settings.service_name}-export"
    subscribe(runtime.broker, runtime.settings, [Topic.PRIVACY], routes, group_id=group)
    runtime.on_timer(EXPORT_EXPIRY, exports.on_expiry)


# ---------------------------------------------------------------- HTTP

Service = Annotated[Exports, service_of("exports", Exports)]
CustomerKey = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
ExportKey = Annotated[str, Path(pattern=r"^EX-[0-9a-f]{16}$")]
router = APIRouter(prefix="/v1", tags=["privacy"])


class ExportRead(BaseModel):
    export_id: str
    customer_id: str
    requested_at: datetime
    expires_at: datetime = Field(description="the key and the answers are deleted then")
    tickets: int = Field(description="the customer's tickets the request named")
    expected: list[str]
    answered: dict[str, dict[str, int]] = Field(description="records exported, by answering service")
    pending: list[str]
    complete: bool
    data: dict[str, dict[str, list[Any]]] | None = Field(
        default=None, description="once complete: each service's records of the customer, by kind"
    )


def _export_read(doc: Mapping[str, Any]) -> ExportRead:
    return ExportRead(
        export_id=doc["_id"],
        customer_id=doc["customer_id"],
        requested_at=doc["requested_at"],
        expires_at=doc["expires_at"],
        tickets=int(doc.get("tickets", 0)),
        expected=list(doc["expected"]),
        answered=dict(doc.get("answered") or {}),
        pending=list(doc.get("pending", doc["expected"])),
        complete=bool(doc.get("complete")),
        data=doc.get("data"),
    )


@router.post(
    "/customers/{customer_id}/exports",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Export a customer's personal data from every service (PIPL); follow it at the returned id",
)
async def request_export(customer_id: CustomerKey, principal: Admin, exports: Service) -> ExportRead:
    return _export_read(await exports.request(customer_id, by=principal.subject))


@router.get(
    "/customers/{customer_id}/exports/{export_id}",
    summary="An export: which services answered and, once complete, the customer's data per service",
    dependencies=[Depends(privacy_api.customer_read)],  # a download of contact data goes in the access log
)
async def get_export(
    customer_id: CustomerKey, export_id: ExportKey, _: Admin, exports: Service
) -> ExportRead:
    return _export_read(await exports.export(customer_id, export_id))
