"""Intake's use cases, shared by the HTTP API and the Kafka consumers. `Intake`: a request becomes a
ticket (or joins an alert storm, or replays an earlier one). `TicketProgress`: a ticket is cancelled,
the customer answers, other services' events go on its timeline. Load, decide (`domain`, `timeline`),
write (`store`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from aftersales.intake import customers, domain, identity, messages, metrics, timeline
from aftersales.intake.customer_records import Read
from aftersales.intake.domain import Ticket, TicketDecision, TicketStatus
from aftersales.intake.rules import classify
from aftersales.intake.store import TicketStore
from aftersales.intake.storms import Alert, Outcome, Storms
from aftersales.shared.aggregate import decide_until_written
from aftersales.shared.contracts.common import Channel
from aftersales.shared.contracts.requests import CustomerReplyRequest, TicketRequest, requested_ticket_id
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import Conflict, Forbidden, NotFound, RetryLater
from aftersales.shared.pii import redact_pii

log = logging.getLogger("aftersales.intake")

STORM_CONCURRENCY = 16
MAX_WRITE_ATTEMPTS = 200  # a busy ticket (an alert storm, a burst of downstream events) is re-read this often

MaySee = Callable[[Ticket], bool]


@dataclass(frozen=True, slots=True)
class Submitted:
    ticket: Ticket
    outcome: Outcome


class Intake:
    """Requests become tickets: judged against the customer's record, classified, then opened, folded
    into their alert storm or answered as a replay."""

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
        self.storms = Storms(store, window_s=storm_window_s, new_ticket=self._new_alert_ticket)

    def customer_id(self, request: TicketRequest) -> str:
        """Return the id of the request's customer (keyed: not computable without the platform's key)."""
        return identity.customer_id_for(request.customer, self.customer_id_key)

    async def _judged(
        self, request: TicketRequest, *, caller: str, staff: bool
    ) -> tuple[TicketRequest, Read]:
        """The request as the platform judges it (tier, entitlement: see `customers`), and the record read."""
        record = await self.store.customer(self.customer_id(request))
        customers.check_may_name(record, request.customer, caller=caller, staff=staff)
        months = self.warranty_months
        return customers.effective_request(request, record, staff=staff, warranty_months=months), Read(record)

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
        fingerprint = identity.request_fingerprint(request)  # of what was sent, so replays compare alike
        request, read = await self._judged(request, caller=caller, staff=staff)
        warranty = domain.under_warranty(request.product, now.date())
        decided = classify(customers.rule_facts(request, under_warranty=warranty, staff=staff))
        if request.channel is Channel.IOT:
            alert = self.alert(request, caller=caller, idempotency_key=idempotency_key, source=source)
            alert = dataclasses.replace(alert, fingerprint=fingerprint)
            [(ticket, outcome)] = await self.storms.absorb(_storm_of(request), [alert])
            if outcome == "created":
                await self._remember_customer(ticket, request, caller=caller, staff=False)
            return Submitted(ticket, outcome)
        ticket = domain.new_ticket(
            request,
            ticket_id=requested_ticket_id(caller, idempotency_key)
            if idempotency_key
            else identity.new_ticket_id(),
            customer_id=self.customer_id(request),
            decided=decided,
            warranty=warranty,
            caller=caller,
            source=source,
            key=identity.dedupe_key(caller, idempotency_key) if idempotency_key else None,
            fingerprint=fingerprint,
            now=now,
        )
        # A replay (same key) collides on the keyed ticket id: insert first, read only then.
        if not await self.store.insert(ticket, [messages.created(ticket)]):
            earlier = await self._must_get(ticket.id)
            return await self._replayed(earlier, request, fingerprint, source, caller=caller, staff=staff)
        return await self._created(ticket, request, caller=caller, staff=staff, read=read)

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
            fingerprint=identity.request_fingerprint(request),
            key=identity.dedupe_key(caller, idempotency_key) if idempotency_key else None,
            caller=caller,
            source=source,
            partition=partition,
            offset=offset,
        )

    async def absorb_alerts(self, alerts: Sequence[Alert]) -> None:
        """Fold a batch of IoT alerts, storm by storm (alerts of one storm in order); storms in parallel,
        after one claim of every alert's idempotency key.
        Each alert is first judged against its customer's record (one read per customer of the batch):
        a gateway naming a customer it has not served is refused, tier and warranty are the platform's."""
        alerts = await self._judged_alerts(alerts)
        replayed = await self.storms.replays(alerts)  # the keys of every storm claimed in one write
        gate = asyncio.Semaphore(STORM_CONCURRENCY)

        async def absorb(storm: str, members: list[Alert], again: set[int]) -> None:
            async with gate:
                for (ticket, outcome), alert in zip(
                    await self.storms.absorb(storm, members, again), members, strict=True
                ):
                    if outcome == "created":
                        await self._remember_customer(ticket, alert.request, caller=alert.caller, staff=False)

        await asyncio.gather(*(absorb(s, *g) for s, g in _by_storm(alerts, replayed).items()))

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

    def _new_alert_ticket(self, alert: Alert) -> Ticket:
        """Return a new storm ticket opened by `alert`."""
        request, now = alert.request, datetime.now(UTC)
        return domain.new_ticket(
            request,
            ticket_id=identity.new_ticket_id(),
            customer_id=self.customer_id(request),
            decided=alert.decided,
            warranty=domain.under_warranty(request.product, now.date()),
            caller=alert.caller,
            source=alert.source,
            key=None,
            fingerprint=alert.fingerprint,
            now=now,
        )

    async def _created(
        self, ticket: Ticket, request: TicketRequest, *, caller: str, staff: bool, read: Read
    ) -> Submitted:
        await self._remember_customer(ticket, request, caller=caller, staff=staff, read=read)
        channel, category, priority = ticket.channel.value, ticket.category.value, ticket.priority.value
        metrics.TICKETS_CREATED.labels(channel, category, priority).inc()
        metrics.STATUS_CHANGES.labels(TicketStatus.NEW.value).inc()
        log.info(
            "ticket created",
            extra={"ticket_id": ticket.id, "channel": channel, "category": category, "priority": priority},
        )
        return Submitted(ticket, "created")

    async def _replayed(
        self,
        earlier: Ticket,
        request: TicketRequest,
        fingerprint: str,
        source: str,
        *,
        caller: str,
        staff: bool,
    ) -> Submitted:
        if earlier.request_hash != fingerprint:
            raise Conflict(
                "this Idempotency-Key was already used for a different request; use a new key",
                field="Idempotency-Key",
            )
        self.store.relay_pending(earlier.id)  # heals a crash (or a lost answer) after the ticket's write,
        await self._remember_customer(earlier, request, caller=caller, staff=staff)  # and after this one
        metrics.TICKETS_REPLAYED.labels(source).inc()
        return Submitted(earlier, "replayed")

    async def _must_get(self, ticket_id: str) -> Ticket:
        ticket = await self.store.load(ticket_id)
        if ticket is None:
            raise RetryLater(f"ticket {ticket_id} vanished during creation")
        return ticket

    async def _remember_customer(
        self, ticket: Ticket, request: TicketRequest, *, caller: str, staff: bool, read: Read | None = None
    ) -> None:
        note = customers.note_of(
            request,
            customer_id=ticket.customer_id,
            ticket_id=ticket.id,
            caller=caller,
            staff=staff,
            now=datetime.now(UTC),
        )
        await self.store.record_customer(note, read=read)


class TicketProgress:
    """An open ticket's progress: an agent cancels it, the customer answers, other services' events
    move it and go on its timeline. Each change: load, decide, version-guarded write."""

    def __init__(self, store: TicketStore) -> None:
        self.store = store

    async def cancel(self, ticket_id: str, *, may_see: MaySee, reason: str) -> None:
        """Cancel a ticket the caller may see that is not yet resolved."""
        now = datetime.now(UTC)
        reason = redact_pii(reason)  # free text: no contact data in the record or the event
        await self._change(
            ticket_id,
            lambda: self._visible(ticket_id, may_see),
            lambda ticket: domain.cancel(ticket, reason=reason, now=now),
        )
        metrics.TICKETS_CANCELLED.inc()
        metrics.STATUS_CHANGES.labels(TicketStatus.CANCELLED.value).inc()

    async def customer_replied(self, ticket_id: str, *, may_see: MaySee, message: str | None) -> None:
        """Move a ticket the caller may see, waiting on the customer, back to work."""
        now = datetime.now(UTC)
        await self._change(
            ticket_id,
            lambda: self._visible(ticket_id, may_see),
            lambda ticket: domain.customer_replied(ticket, message=message, now=now),
        )
        metrics.STATUS_CHANGES.labels(TicketStatus.IN_PROGRESS.value).inc()

    async def customer_wrote(
        self, reply: CustomerReplyRequest, *, caller: str, customer_id_key: bytes
    ) -> None:
        """Apply a reply the customer sent on the ticket's thread, once per idempotency key (see
        `domain.customer_wrote`); 404 for an unknown ticket, 403 when the sender is not its customer."""
        reply_id = f"reply:{identity.dedupe_key(caller, reply.idempotency_key)}"

        async def load() -> Ticket:
            ticket = await self._existing(reply.ticket_id, applying=reply_id)
            if not await self._sent_by_customer(ticket, reply, customer_id_key):
                raise Forbidden(f"the sender is not ticket {reply.ticket_id}'s customer", field="email")
            return ticket

        decision = await self._change(
            reply.ticket_id,
            load,
            lambda ticket: domain.customer_wrote(
                ticket, message=reply.text, reply_id=reply_id, now=datetime.now(UTC)
            ),
        )
        if decision.moved_to is not None:
            metrics.STATUS_CHANGES.labels(decision.moved_to.value).inc()

    async def _sent_by_customer(self, ticket: Ticket, reply: CustomerReplyRequest, key: bytes) -> bool:
        """Whether the reply's e-mail or phone is the ticket's customer's: the customer id they make, or
        the contact points of the customer's record (a customer first known by phone, writing by mail)."""
        email, phone = reply.email, reply.phone
        if ticket.customer_id in identity.contact_customer_ids(email=email, phone=phone, key=key):
            return True
        record = await self.store.customer(ticket.customer_id) or {}
        known = str(record.get("email") or "").strip().lower()
        return bool(email and known == email.strip().lower()) or bool(phone and record.get("phone") == phone)

    async def _change(
        self,
        ticket_id: str,
        load: Callable[[], Awaitable[Ticket]],
        decide: Callable[[Ticket], TicketDecision],
    ) -> TicketDecision:
        """Load, decide and write a ticket until the version-guarded write wins (`RetryLater` when it
        keeps losing); return the decision that was written (or that changed nothing)."""
        decision = await decide_until_written(
            load, decide, self.store.write, attempts=MAX_WRITE_ATTEMPTS, what=f"ticket {ticket_id}"
        )
        assert isinstance(decision, TicketDecision)  # what `decide` returned
        return decision

    async def _visible(self, ticket_id: str, may_see: MaySee) -> Ticket:
        ticket = await self._existing(ticket_id)
        if not may_see(ticket):
            raise NotFound(f"ticket {ticket_id} not found")
        return ticket

    async def _existing(
        self, ticket_id: str, *, applying: str | None = None, stamp: int | None = None
    ) -> Ticket:
        ticket = await self.store.load(ticket_id, applying=applying, stamp=stamp)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} not found")
        return ticket

    # ------------------------------------------------------------ other services' events

    async def on_downstream_event(self, _: BaseModel, event: CloudEvent) -> None:
        """Apply an assignment, follow-up or feedback event to its ticket (at most once)."""
        data: Mapping[str, Any] = event.data
        ticket_id = data.get("ticket_id")
        if not isinstance(ticket_id, str) or not ticket_id:
            return  # grid-level events (surge on/off) and ticketless complaints are not on any ticket
        happened = timeline.downstream_of(
            ce_type=event.type, ce_source=event.source, ce_id=event.id, ce_time=event.time, data=data
        )
        try:
            decision = await self._change(
                ticket_id,
                lambda: self._existing(ticket_id, applying=happened.event_id, stamp=happened.stamp),
                lambda ticket: timeline.apply_downstream(ticket, happened, now=datetime.now(UTC)),
            )
        except NotFound:
            log.warning(
                "event for an unknown ticket ignored", extra={"ticket_id": ticket_id, "type": happened.kind}
            )
            return
        if decision.moved_to is not None:
            metrics.STATUS_CHANGES.labels(decision.moved_to.value).inc()
            if decision.moved_to is TicketStatus.REOPENED:
                metrics.TICKETS_REOPENED.inc()
            if decision.moved_to is TicketStatus.CLOSED:
                metrics.TICKETS_CLOSED.labels("confirmed_resolved").inc()


def _storm_of(request: TicketRequest) -> str:
    assert request.iot is not None and request.product.serial is not None
    return domain.storm_key(request.product.serial, request.iot.fault_code)


def _by_storm(alerts: Sequence[Alert], replayed: Collection[int]) -> dict[str, tuple[list[Alert], set[int]]]:
    """Group a batch's alerts by storm, in order: each storm's alerts, and which of them (by position in
    the storm) replay an earlier request."""
    storms: dict[str, tuple[list[Alert], set[int]]] = {}
    for i, alert in enumerate(alerts):
        members, again = storms.setdefault(_storm_of(alert.request), ([], set()))
        if i in replayed:
            again.add(len(members))
        members.append(alert)
    return storms
