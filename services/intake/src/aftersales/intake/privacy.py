"""Personal-data rights (PIPL 个人信息保护法) at intake, the system of record for customers: erasure
requests and their report, consent and the do-not-contact flag, and the access log of customers'
contact data. Its routes, its use cases and its subscription to `aftersales.privacy.v1`.

An erasure request is one write: the request with its `erasure-requested` events (the customer's ticket
ids in chunks of 200, with the ids of the inbound mails those tickets were opened from; ids only) in its
outbox. Every service holding personal data (intake itself too) erases its copy and confirms with an
`erasure-confirmed` event; the report lists who confirmed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import AwareDatetime, BaseModel, Field

from aftersales.intake.attachment_service import TicketFiles
from aftersales.intake.privacy_store import ACCESS_PAGE_ENTRIES, PrivacyStore
from aftersales.shared.auth import Principal
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.privacy import (
    ERASURE_CHUNK_TICKETS,
    ContactPreferencesChanged,
    ErasureConfirmed,
    ErasureRequested,
    in_chunks,
)
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import NotFound
from aftersales.shared.kafka import subscribe
from aftersales.shared.privacy import ErasureLedger
from aftersales.shared.roles import Admin, AnyCaller, Supervisor, service_of
from aftersales.shared.routes import EventRoutes
from aftersales.shared.runtime import ServiceRuntime

SOURCE = "/aftersales/intake"
MAX_ERASED_TICKETS = 100_000  # a customer's tickets an erasure names (500 chunks at most)
MAIL_REF = "mail:"  # the `external_ref` of a ticket opened from a mail (notify's inbound mail gateway)
Purpose = Literal["care_calls", "marketing"]


class Privacy:
    """Erasure requests, contact preferences and the access log of customers' contact data."""

    def __init__(
        self,
        store: PrivacyStore,
        ledger: ErasureLedger,
        *,
        expected: tuple[str, ...],
        attachments: TicketFiles | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.expected = expected
        self.attachments = attachments

    async def request_erasure(self, customer_id: str, *, by: str) -> dict[str, Any]:
        """Record an erasure request and its events; return the request."""
        now = datetime.now(UTC)
        erasure_id = f"ER-{uuid.uuid4().hex[:16]}"
        tickets = await self.store.customer_tickets(customer_id, MAX_ERASED_TICKETS)
        chunks = in_chunks(tickets, ERASURE_CHUNK_TICKETS)
        events = [
            new_event(
                ErasureRequested(
                    erasure_id=erasure_id,
                    customer_id=customer_id,
                    ticket_ids=[ticket_id for ticket_id, _ in chunk],
                    mail_ids=mail_ids_of(chunk),
                    chunk=n,
                    chunks=len(chunks),
                    requested_at=now,
                ),
                source=SOURCE,
                subject=customer_id,
            )
            for n, chunk in enumerate(chunks)
        ]
        doc = {
            "_id": erasure_id,
            "customer_id": customer_id,
            "requested_by": by,
            "requested_at": now,
            "tickets": len(tickets),
            "expected": list(self.expected),
            "confirmations": {},
        }
        await self.store.add_erasure(doc, events)
        return doc

    async def erasure(self, erasure_id: str) -> dict[str, Any]:
        """Return an erasure request with who confirmed it; 404 when there is none."""
        found = await self.store.erasure(erasure_id)
        if found is None:
            raise NotFound(f"erasure {erasure_id} not found")
        return found

    async def on_erasure_requested(self, request: ErasureRequested, _: CloudEvent) -> None:
        async def erase() -> dict[str, int]:
            customers = 0
            if request.chunk == 0:
                customers = await self.store.erase_customer(request.customer_id, datetime.now(UTC))
            tickets = sum([await self.store.erase_ticket_text(t) for t in request.ticket_ids])
            counts = {"customers": customers, "tickets": tickets}
            if self.attachments is not None:  # photos and invoices are personal data too
                erased = sum([await self.attachments.erase(t) for t in request.ticket_ids])
                if erased:
                    counts["attachments"] = erased
            return counts

        await self.ledger.apply(request, erase)

    async def on_erasure_confirmed(self, confirmed: ErasureConfirmed, _: CloudEvent) -> None:
        await self.store.confirm(
            confirmed.erasure_id, confirmed.service, confirmed.counts, confirmed.confirmed_at
        )

    async def set_preferences(self, customer_id: str, body: PreferencesIn, *, by: str) -> dict[str, Any]:
        """Record a customer's consents and do-not-contact flag; return them."""
        now = datetime.now(UTC)
        before = await self.store.preferences(customer_id) or {}
        consents = dict(before.get("consents") or {})
        for purpose, consent in (("care_calls", body.care_calls), ("marketing", body.marketing)):
            if consent is not None:
                consents[purpose] = {
                    **consent.model_dump(mode="json"),
                    "at": consent.at or now,
                    "recorded_by": by,
                }
        fields = {
            "do_not_contact": body.do_not_contact,
            "consents": consents,
            "changed_at": now,
            "changed_by": by,
        }
        changed = ContactPreferencesChanged(
            customer_id=customer_id,
            do_not_contact=body.do_not_contact,
            care_calls=bool(consents.get("care_calls", {}).get("granted", True)),
            marketing=bool(consents.get("marketing", {}).get("granted", False)),
            changed_at=now,
        )
        await self.store.put_preferences(
            customer_id, fields, [new_event(changed, source=SOURCE, subject=customer_id)]
        )
        return {"customer_id": customer_id, **fields}

    async def preferences(self, customer_id: str) -> dict[str, Any]:
        """Return a customer's recorded preferences (defaults when none were recorded)."""
        found = await self.store.preferences(customer_id) or {"do_not_contact": False, "consents": {}}
        return {**found, "customer_id": customer_id}

    async def log_read(self, customer_id: str, principal: Principal, *, route: str) -> None:
        """Append a read of the customer's contact data to its access log."""
        entry = {"at": datetime.now(UTC), "by": principal.subject, "route": route}
        await self.store.log_access(customer_id, entry)

    async def access_log(self, customer_id: str, page: int | None) -> dict[str, Any]:
        """Return a page of the customer's access log (the newest by default)."""
        pages = await self.store.access_pages(customer_id)
        shown = pages - 1 if page is None else page
        entries = await self.store.access_page(customer_id, shown) if 0 <= shown < pages else []
        return {"customer_id": customer_id, "page": shown, "pages": pages, "entries": entries}


def mail_ids_of(tickets: list[tuple[str, str | None]]) -> list[str]:
    """Return the ids of the inbound mails the tickets were opened from (`external_ref` `mail:<id>`)."""
    return [ref.removeprefix(MAIL_REF) for _, ref in tickets if ref and ref.startswith(MAIL_REF)]


def register(runtime: ServiceRuntime, privacy: Privacy) -> None:
    """Subscribe intake to the privacy stream: erase its own copy, and collect the confirmations."""
    routes = EventRoutes(
        {ErasureRequested: privacy.on_erasure_requested, ErasureConfirmed: privacy.on_erasure_confirmed}
    )
    group = f"aftersales-{runtime.settings.service_name}-privacy"
    subscribe(runtime.broker, runtime.settings, [Topic.PRIVACY], routes, group_id=group)


# ---------------------------------------------------------------- HTTP

Service = Annotated[Privacy, service_of("privacy", Privacy)]
CustomerId = Annotated[str, Path(max_length=100)]
router = APIRouter(prefix="/v1", tags=["privacy"])


class ConsentIn(BaseModel):
    granted: bool
    channel: Channel = Field(description="where the customer gave or withdrew it")
    at: AwareDatetime | None = Field(default=None, description="when; now when not given")


class PreferencesIn(BaseModel):
    do_not_contact: bool = Field(description="no care calls and no messages to the customer at all")
    care_calls: ConsentIn | None = Field(default=None, description="consent to follow-up care calls (回访)")
    marketing: ConsentIn | None = Field(default=None, description="consent to marketing messages")


class ErasureRead(BaseModel):
    erasure_id: str
    customer_id: str
    requested_at: datetime
    tickets: int = Field(description="the customer's tickets the request named")
    expected: list[str]
    confirmed: dict[str, dict[str, int]] = Field(description="counts erased, by confirming service")
    pending: list[str]
    complete: bool


def _erasure_read(doc: dict[str, Any]) -> ErasureRead:
    confirmed = {svc: dict(c.get("counts", {})) for svc, c in (doc.get("confirmations") or {}).items()}
    pending = [svc for svc in doc["expected"] if svc not in confirmed]
    return ErasureRead(
        erasure_id=doc["_id"],
        customer_id=doc["customer_id"],
        requested_at=doc["requested_at"],
        tickets=int(doc.get("tickets", 0)),
        expected=list(doc["expected"]),
        confirmed=confirmed,
        pending=pending,
        complete=not pending,
    )


@router.post(
    "/customers/{customer_id}/erasure",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Erase a customer's personal data in every service (PIPL); follow it at /v1/erasures/{id}",
)
async def request_erasure(customer_id: CustomerId, principal: Admin, privacy: Service) -> ErasureRead:
    return _erasure_read(await privacy.request_erasure(customer_id, by=principal.subject))


@router.get("/erasures/{erasure_id}", summary="An erasure request: which services confirmed it")
async def get_erasure(
    erasure_id: Annotated[str, Path(max_length=100)], _: Admin, privacy: Service
) -> ErasureRead:
    return _erasure_read(await privacy.erasure(erasure_id))


@router.put("/customers/{customer_id}/contact-preferences", summary="Record consent and do-not-contact")
async def put_preferences(
    customer_id: CustomerId, body: PreferencesIn, principal: Supervisor, privacy: Service
) -> dict[str, Any]:
    return await privacy.set_preferences(customer_id, body, by=principal.subject)


@router.get(
    "/customers/{customer_id}/contact-preferences", summary="A customer's consents and do-not-contact"
)
async def get_preferences(customer_id: CustomerId, _: Supervisor, privacy: Service) -> dict[str, Any]:
    return await privacy.preferences(customer_id)


@router.get(
    "/customers/{customer_id}/access-log",
    summary=f"Who read the customer's contact data: pages of {ACCESS_PAGE_ENTRIES}, the newest by default",
)
async def get_access_log(
    customer_id: CustomerId,
    _: Admin,
    privacy: Service,
    page: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
) -> dict[str, Any]:
    return await privacy.access_log(customer_id, page)


async def customer_read(
    customer_id: CustomerId, request: Request, principal: AnyCaller, privacy: Service
) -> None:
    """A route dependency: log the call of a route that shows a customer's contact data (before it
    runs, so refused attempts are in the log too)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    await privacy.log_read(customer_id, principal, route=f"{request.method} {path}")
