"""Intake's use cases: a request becomes a ticket (or joins an alert storm, or replays an earlier one);
a ticket is cancelled; the customer answers. Shared by the HTTP API and the Kafka request consumer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aftersales.intake import customers, domain, metrics
from aftersales.intake.domain import TicketStatus
from aftersales.intake.rules import Classification, classify
from aftersales.intake.store import KEEP_TIMELINE, Change, ContentionError, TicketStore
from aftersales.intake.storms import Alert, Storms
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.events import TicketCancelled, TicketCreated, TicketUpdated
from aftersales.shared.contracts.requests import TicketRequest
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.errors import Conflict, NotFound
from aftersales.shared.mongo import merge_updates
from aftersales.shared.pii import redact_pii

log = logging.getLogger("aftersales.intake")

SOURCE = "/aftersales/intake"
STORM_CONCURRENCY = 16

Outcome = Literal["created", "merged", "replayed"]


@dataclass(frozen=True, slots=True)
class Submitted:
    ticket: dict[str, Any]
    outcome: Outcome


def event_for(model: Any, ticket_id: str) -> CloudEvent:
    return new_event(model, source=SOURCE, subject=ticket_id)


class Intake:
    def __init__(
        self,
        store: TicketStore,
        *,
        storm_window_s: float,
        customer_id_key: bytes,
        standard_warranty_months: int = 24,
    ) -> None:
        self.store = store
        self.storm_window_s = storm_window_s
        self.customer_id_key = customer_id_key
        self.warranty_months = standard_warranty_months
        self.storms = Storms(
            store, window_s=storm_window_s, new_ticket=self._new_alert_ticket, event_for=event_for
        )

    def customer_id(self, request: TicketRequest) -> str:
        """Return the id of the request's customer (keyed: not computable without the platform's key)."""
        return domain.customer_id_for(request.customer, self.customer_id_key)

    async def _judged(self, request: TicketRequest, *, caller: str, staff: bool) -> TicketRequest:
        """Check the caller may name the request's customer; return the request with the platform's
        tier and entitlement in place of what the caller claimed (see `customers`)."""
        record = await self.store.customer(self.customer_id(request))
        customers.check_may_name(record, request.customer, caller=caller, staff=staff)
        return customers.effective_request(request, record, staff=staff, warranty_months=self.warranty_months)

    async def submit(
        self,
        request: TicketRequest,
        *,
        caller: str,
        idempotency_key: str | None,
        source: str,
        staff: bool = False,
    ) -> Submitted:
        """Return the ticket a request created, joined (alert storm) or replayed (same idempotency key).
        `staff` (a supervisor or admin) may set the tier, the warranty period and the priority."""
        now = datetime.now(UTC)
        fingerprint = domain.request_fingerprint(request)  # of what was sent, so replays compare alike
        request = await self._judged(request, caller=caller, staff=staff)
        warranty = domain.under_warranty(request.product, now.date())
        decided = classify(customers.rule_facts(request, under_warranty=warranty, staff=staff))
        key = domain.dedupe_key(caller, idempotency_key) if idempotency_key else None
        ticket_id = (
            domain.keyed_ticket_id(caller, idempotency_key) if idempotency_key else domain.new_ticket_id()
        )
        if request.channel is Channel.IOT:
            alert = self.alert(request, caller=caller, idempotency_key=idempotency_key, source=source)
            alert = dataclasses.replace(alert, fingerprint=fingerprint)
            [(ticket, outcome)] = await self.storms.absorb(_storm_of(request), [alert])
            if outcome == "created":
                await self._remember_customer(ticket, request, caller=caller, staff=False)
            return Submitted(ticket, outcome)  # type: ignore[arg-type]
        # A replay (same key) collides on the keyed ticket id: insert first, read only then.
        doc = self._new_ticket(request, ticket_id, decided, warranty, caller, source, key, fingerprint, now)
        created = event_for(
            TicketCreated(**domain.facts_of(doc), created_at=now, rules_version=decided.rules_version),
            ticket_id,
        )
        if not await self.store.insert(doc, [created]):
            earlier = await self._must_get(ticket_id)
            return await self._replayed(earlier, request, fingerprint, source, caller=caller, staff=staff)
        return await self._created(doc, request, caller=caller, staff=staff)

    def alert(
        self,
        request: TicketRequest,
        *,
        caller: str,
        idempotency_key: str | None,
        source: str,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Alert:
        """Return an IoT request as an alert to fold into its storm."""
        warranty = domain.under_warranty(request.product, datetime.now(UTC).date())
        return Alert(
            request=request,
            decided=classify(customers.rule_facts(request, under_warranty=warranty, staff=False)),
            fingerprint=domain.request_fingerprint(request),
            key=domain.dedupe_key(caller, idempotency_key) if idempotency_key else None,
            caller=caller,
            source=source,
            partition=partition,
            offset=offset,
        )

    async def absorb_alerts(self, alerts: Sequence[Alert]) -> None:
        """Fold a batch of IoT alerts, storm by storm (alerts of one storm in order); storms in parallel.
        Each alert is first judged against its customer's record (one read per customer of the batch):
        a gateway naming a customer it has not served is refused, tier and warranty are the platform's."""
        alerts = await self._judged_alerts(alerts)
        storms: dict[str, list[Alert]] = {}
        for alert in alerts:
            storms.setdefault(_storm_of(alert.request), []).append(alert)
        gate = asyncio.Semaphore(STORM_CONCURRENCY)

        async def absorb(storm: str, group: list[Alert]) -> None:
            async with gate:
                for (ticket, outcome), alert in zip(
                    await self.storms.absorb(storm, group), group, strict=True
                ):
                    if outcome == "created":
                        await self._remember_customer(ticket, alert.request, caller=alert.caller, staff=False)

        await asyncio.gather(*(absorb(s, g) for s, g in storms.items()))

    async def _judged_alerts(self, alerts: Sequence[Alert]) -> list[Alert]:
        ids = {self.customer_id(a.request) for a in alerts}
        records = dict(zip(ids, await asyncio.gather(*(self.store.customer(i) for i in ids)), strict=True))
        out = []
        today = datetime.now(UTC).date()
        for alert in alerts:
            record = records[self.customer_id(alert.request)]
            customers.check_may_name(record, alert.request.customer, caller=alert.caller, staff=False)
            request = customers.effective_request(
                alert.request, record, staff=False, warranty_months=self.warranty_months
            )
            warranty = domain.under_warranty(request.product, today)
            decided = classify(customers.rule_facts(request, under_warranty=warranty, staff=False))
            out.append(dataclasses.replace(alert, request=request, decided=decided))
        return out

    def _new_alert_ticket(self, alert: Alert) -> tuple[dict[str, Any], CloudEvent]:
        """Return a new storm ticket opened by `alert`, with its created event."""
        request, now = alert.request, datetime.now(UTC)
        ticket_id = domain.new_ticket_id()
        warranty = domain.under_warranty(request.product, now.date())
        doc = self._new_ticket(
            request,
            ticket_id,
            alert.decided,
            warranty,
            alert.caller,
            alert.source,
            None,
            alert.fingerprint,
            now,
        )
        created = event_for(
            TicketCreated(**domain.facts_of(doc), created_at=now, rules_version=alert.decided.rules_version),
            ticket_id,
        )
        return doc, created

    def _new_ticket(
        self,
        request: TicketRequest,
        ticket_id: str,
        decided: Classification,
        warranty: bool | None,
        caller: str,
        source: str,
        key: str | None,
        fingerprint: str,
        now: datetime,
    ) -> dict[str, Any]:
        customer = request.customer
        iot = request.iot
        return {
            "_id": ticket_id,
            "version": 0,
            "status": TicketStatus.NEW.value,
            "channel": request.channel.value,
            "category": decided.category.value,
            "priority": decided.priority.value,
            "rules_version": decided.rules_version,
            "matched_rules": list(decided.matched),
            "category_hint": request.category_hint.value if request.category_hint else None,
            "priority_hint": request.priority_hint.value if request.priority_hint else None,
            "title": request.title,
            "description": request.description,
            "external_ref": request.external_ref,
            "customer_id": self.customer_id(request),
            "customer_tier": customer.tier.value,
            "customer_timezone": customer.timezone,
            "region_code": customer.region_code,
            "product": domain.product_document(request.product),
            "under_warranty": warranty,
            "fault_code": iot.fault_code if iot else None,
            "severity": iot.severity if iot else None,
            "alert_count": 1 if iot else None,
            "first_seen": domain.stored_precision(iot.observed_at) if iot else None,
            "last_seen": domain.stored_precision(iot.observed_at) if iot else None,
            "storm_key": domain.released_storm_key(ticket_id),
            "created_by": caller,
            "source": source,
            "created_at": now,
            "updated_at": now,
            "status_changed_at": now,
            "technician_id": None,
            "last_technician_id": None,
            "reopen_count": 0,
            "request_keys": [key] if key else [],
            "request_hash": fingerprint,
            "customer_messages": [],
            "timeline": [
                {"at": now, "type": "ticket.created", "source": "intake", "channel": request.channel.value}
            ],
            "applied_events": [],
        }

    async def _created(
        self, doc: dict[str, Any], request: TicketRequest, *, caller: str, staff: bool
    ) -> Submitted:
        await self._remember_customer(doc, request, caller=caller, staff=staff)
        metrics.TICKETS_CREATED.labels(doc["channel"], doc["category"], doc["priority"]).inc()
        metrics.STATUS_CHANGES.labels(TicketStatus.NEW.value).inc()
        log.info(
            "ticket created",
            extra={
                "ticket_id": doc["_id"],
                "channel": doc["channel"],
                "category": doc["category"],
                "priority": doc["priority"],
            },
        )
        return Submitted(doc, "created")

    async def _replayed(
        self,
        earlier: dict[str, Any],
        request: TicketRequest,
        fingerprint: str,
        source: str,
        *,
        caller: str,
        staff: bool,
    ) -> Submitted:
        if earlier.get("request_hash") != fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used for a different request; use a new key",
                field="Idempotency-Key",
            )
        # heals a crash between the ticket's and the customer's write
        await self._remember_customer(earlier, request, caller=caller, staff=staff)
        metrics.TICKETS_REPLAYED.labels(source).inc()
        return Submitted(earlier, "replayed")

    async def _must_get(self, ticket_id: str) -> dict[str, Any]:
        doc = await self.store.get(ticket_id)
        if doc is None:
            raise ContentionError(f"ticket {ticket_id} vanished during creation")
        return doc

    async def _remember_customer(
        self, ticket: dict[str, Any], request: TicketRequest, *, caller: str, staff: bool
    ) -> None:
        product = {
            k: v for k, v in domain.product_document(request.product).items() if k != "warranty_months"
        }
        update = customers.record_update(
            request,
            caller=caller,
            staff=staff,
            product=product,
            ticket_id=ticket["_id"],
            now=datetime.now(UTC),
        )
        await self.store.upsert_customer(ticket["customer_id"], update)

    # ------------------------------------------------------------ agent and customer actions

    async def cancel(self, ticket_id: str, *, visible: Any, reason: str) -> dict[str, Any]:
        """Cancel a ticket that is not yet resolved; return it as it was before."""
        now = datetime.now(UTC)
        reason = redact_pii(reason)  # free text: no contact data in the record or the event

        def decide(doc: dict[str, Any]) -> Change:
            if not visible(doc):
                raise NotFound(f"ticket {ticket_id} not found")
            status = TicketStatus(doc["status"])
            if not domain.can_cancel(status):
                raise Conflict(
                    f"ticket {ticket_id} is {status.value} and can no longer be cancelled", field="status"
                )
            return Change(
                update=_status_update(
                    TicketStatus.CANCELLED,
                    now,
                    entry={"type": "ticket.cancelled"},
                    extra={
                        "storm_key": domain.released_storm_key(ticket_id),
                        "cancelled_at": now,
                        "cancel_reason": reason,
                    },
                ),
                events=[
                    event_for(
                        TicketCancelled(ticket_id=ticket_id, reason=reason, cancelled_at=now), ticket_id
                    )
                ],
            )

        applied = await self.store.change(ticket_id, decide)
        if applied is None:
            raise NotFound(f"ticket {ticket_id} not found")
        metrics.TICKETS_CANCELLED.inc()
        metrics.STATUS_CHANGES.labels(TicketStatus.CANCELLED.value).inc()
        return applied.before

    async def customer_replied(self, ticket_id: str, *, visible: Any, message: str | None) -> dict[str, Any]:
        """Move a ticket waiting on the customer back to work; return it as it was before."""
        now = datetime.now(UTC)

        def decide(doc: dict[str, Any]) -> Change:
            if not visible(doc):
                raise NotFound(f"ticket {ticket_id} not found")
            status = TicketStatus(doc["status"])
            if not domain.can_customer_reply(status):
                raise Conflict(
                    f"ticket {ticket_id} is {status.value}, not waiting for the customer", field="status"
                )
            update = _status_update(TicketStatus.IN_PROGRESS, now, entry={"type": "ticket.customer_replied"})
            if message:
                update = merge_updates(
                    update,
                    {
                        "$push": {
                            "customer_messages": {
                                "$each": [{"at": now, "message": redact_pii(message)}],
                                "$slice": -50,
                            }
                        }
                    },
                )
            return Change(
                update=update,
                events=[
                    event_for(
                        TicketUpdated(ticket_id=ticket_id, change="customer_replied", updated_at=now),
                        ticket_id,
                    )
                ],
            )

        applied = await self.store.change(ticket_id, decide)
        if applied is None:
            raise NotFound(f"ticket {ticket_id} not found")
        metrics.STATUS_CHANGES.labels(TicketStatus.IN_PROGRESS.value).inc()
        return applied.before


def _status_update(
    status: TicketStatus, now: datetime, *, entry: dict[str, Any], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the update that moves a ticket to `status` and notes it on the timeline."""
    timeline = {"at": now, "source": "intake", **entry}
    return {
        "$set": {"status": status.value, "status_changed_at": now, **(extra or {})},
        "$push": {"timeline": {"$each": [timeline], "$slice": -KEEP_TIMELINE}},
    }


def _storm_of(request: TicketRequest) -> str:
    assert request.iot is not None and request.product.serial is not None
    return domain.storm_key(request.product.serial, request.iot.fault_code)
