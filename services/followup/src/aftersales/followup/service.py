"""Follow-up use cases: what happens on a resolution, a ticket change, an agent's action or a timer.

The edges (api.py, consumers.py, timers.py) call these; the rules come from domain.py, the writes from
store.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.followup import domain, messages
from aftersales.followup.domain import FollowUpPolicy, Resolution, Visit, VisitStatus
from aftersales.followup.metrics import (
    RESOLUTIONS_WITHOUT_FACTS,
    VISIT_OUTCOMES,
    VISITS_CANCELLED,
    VISITS_DUE,
    VISITS_OVERDUE,
    VISITS_SCHEDULED,
)
from aftersales.followup.privacy import contactable
from aftersales.followup.store import HistoryEntry, TicketFactsStore, VisitStore
from aftersales.shared.aggregate import Decision, decide_until_written
from aftersales.shared.contracts.events import (
    TicketCancelled,
    TicketClosed,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    VisitKind,
    VisitOutcome,
    WorkOrderResolved,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater
from aftersales.shared.pii import redact_optional
from aftersales.shared.privacy import ContactPreferenceStore
from aftersales.shared.runtime import BackgroundTask, periodic
from aftersales.shared.timers import NOT_WRITTEN_RETRIES, Timer

log = logging.getLogger("aftersales.followup")

NEXT_CARE_DELAY = timedelta(seconds=10)
FACT_FIELDS = set(TicketFacts.model_fields)


Kinds = tuple[VisitKind, ...]
KEPT_ALWAYS: Kinds = (VisitKind.CARE,)  # care visits belong to the customer, not to one ticket
# The on-site quality check (上门检查) is its own inspection, not a step before closing: a ticket closed
# after its callback keeps it (only a reopen or a cancellation withdraws it).
KEPT_ON_CLOSE: Kinds = (VisitKind.CARE, VisitKind.ON_SITE)


class FollowUps:
    """The follow-up desk's use cases: schedule visits on resolutions, cancel them with their ticket, take
    the agents' outcomes and moves, and act on the visits' timers."""

    def __init__(self, store: VisitStore, tickets: TicketFactsStore, policy: FollowUpPolicy) -> None:
        self.preferences: ContactPreferenceStore | None = None  # set by app.build: do-not-contact
        self.store = store
        self.tickets = tickets
        self.policy = policy

    # ------------------------------------------------------------------ events (consumers.py)

    async def on_ticket_created(self, ticket: TicketCreated, event: CloudEvent) -> None:
        await self.tickets.remember(event.id, ticket.model_dump(mode="json", include=FACT_FIELDS), 1)

    async def on_ticket_reopened(self, ticket: TicketReopened, event: CloudEvent) -> None:
        facts = ticket.model_dump(mode="json", include=FACT_FIELDS)
        await self.tickets.remember(event.id, facts, ticket.reopen_count + 1)
        await self.cancel_ticket_visits(ticket.ticket_id, "ticket_reopened")

    async def on_ticket_closed(self, ticket: TicketClosed, event: CloudEvent) -> None:
        await self.tickets.mark(event.id, ticket.ticket_id, "closed")
        await self.cancel_ticket_visits(ticket.ticket_id, f"ticket_closed:{ticket.reason}", KEPT_ON_CLOSE)

    async def on_ticket_cancelled(self, ticket: TicketCancelled, event: CloudEvent) -> None:
        await self.tickets.mark(event.id, ticket.ticket_id, "cancelled")
        await self.cancel_ticket_visits(ticket.ticket_id, "ticket_cancelled")

    async def on_work_order_resolved(self, resolved: WorkOrderResolved, _: CloudEvent) -> None:
        await self.on_resolved(
            Resolution(
                ticket_id=resolved.ticket_id,
                round=resolved.round,
                technician_id=resolved.technician_id,
                grid_id=resolved.grid_id,
                priority=resolved.priority,
                category=resolved.category,
                resolved_at=resolved.occurred_at,
            )
        )

    # ------------------------------------------------------------------ use cases

    async def on_resolved(self, res: Resolution) -> list[Visit]:
        """Schedule the visits the policy asks for after a resolution; return the ones created now."""
        if await self.tickets.status(res.ticket_id) == "cancelled":
            log.info("resolution of a cancelled ticket: no visits", extra={"ticket_id": res.ticket_id})
            return []
        customer = await self.tickets.customer_of(res.ticket_id)
        if customer.customer_id is None:
            _facts_missing(self.policy, res)
        next_care = await self.store.next_care(customer.customer_id)
        needs_care, care_n = next_care is not None, next_care or 1
        created: list[Visit] = []
        plans = domain.plan_visits(self.policy, res, customer, needs_care=needs_care)
        for plan in await contactable(self.preferences, plans, customer.customer_id):
            visit = domain.new_visit(plan, res, customer, care_n=care_n)
            if await self.store.create(visit):
                VISITS_SCHEDULED.labels(visit.kind.value).inc()
                created.append(visit)
        if created:
            kinds = [v.kind.value for v in created]
            log.info(
                "visits scheduled", extra={"ticket_id": res.ticket_id, "round": res.round, "kinds": kinds}
            )
        return created

    async def cancel_ticket_visits(self, ticket_id: str, reason: str, keep: Kinds = KEPT_ALWAYS) -> int:
        """Cancel the ticket's open visits except the kinds in `keep` (care visits belong to the customer)."""
        cancelled = 0
        for visit in await self.store.open_visits(ticket_id, await self.tickets.rounds(ticket_id)):
            if visit.kind not in keep and await self.store.cancel(visit, reason):
                VISITS_CANCELLED.labels(visit.kind.value).inc()
                cancelled += 1
        if cancelled:
            await self.refresh_gauges()
        return cancelled

    async def record_outcome(
        self,
        visit_id: str,
        outcome: VisitOutcome,
        *,
        agent: str,
        note: str | None,
        on_behalf_of: str | None = None,
    ) -> Visit:
        """Record the outcome `agent` (the caller) reached; return the visit after it."""
        note = redact_optional(note)

        def decide(before: Visit) -> Decision[Visit]:
            now = datetime.now(UTC)
            decision = domain.record_outcome(self.policy, before, outcome, now)
            return Decision(decision.visit, tuple(messages.for_decision(before, decision, now, note)))

        entry = HistoryEntry(f"outcome:{outcome.value}", agent, note, on_behalf_of)
        after = await self._decide(visit_id, decide, entry)
        VISIT_OUTCOMES.labels(after.kind.value, outcome.value).inc()
        return after

    async def reschedule(
        self, visit_id: str, due_at: datetime, *, by: str, agent_id: str | None, note: str | None
    ) -> Visit:
        """Move the visit to `due_at` (out of do-not-disturb hours); return the visit after it."""

        def decide(before: Visit) -> Decision[Visit]:
            now = datetime.now(UTC)
            after = domain.reschedule(self.policy, before, due_at, now, agent_id)
            return Decision(after, (messages.scheduled(after, now, rescheduled=True),))

        return await self._decide(visit_id, decide, HistoryEntry("rescheduled", by, redact_optional(note)))

    async def _decide(
        self, visit_id: str, decide: Callable[[Visit], Decision[Visit]], entry: HistoryEntry
    ) -> Visit:
        async def write(before: Visit, decision: Decision[Visit]) -> bool:
            if before.kind == VisitKind.CARE and not decision.state.is_open:
                await self._plan_next_care(before)
            return await self.store.write(before, decision.state, decision.events, entry)

        decision = await decide_until_written(
            lambda: self.store.load(visit_id), decide, write, what=f"visit {visit_id}"
        )
        await self.refresh_gauges()
        return decision.state

    async def visit(self, visit_id: str) -> dict[str, Any]:
        """Return one visit as the desk reads it, with its history."""
        return await self.store.get(visit_id)

    async def visits(self, equal_to: dict[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return the visits whose fields equal the given values (None: any), by due time."""
        return await self.store.find(equal_to, limit)

    # ------------------------------------------------------------------ timers (timers.py)

    async def on_visit_due(self, timer: Timer) -> None:
        target = await self._timer_target(timer)
        if (
            target is not None
            and domain.becomes_due(*target)
            and await self.store.mark_due(timer.id, target[0])
        ):
            await self.refresh_gauges()

    async def on_visit_overdue(self, timer: Timer) -> None:
        target = await self._timer_target(timer)
        if target is None or not domain.goes_missed(*target):
            return
        visit = target[0]
        if visit.kind == VisitKind.CARE:
            await self._plan_next_care(visit)
        if await self.store.mark_missed(timer.id, visit):
            VISITS_OVERDUE.inc()
            await self.refresh_gauges()

    async def on_next_care(self, timer: Timer) -> None:
        care = await self.store.find_visit(str(timer.payload["visit_id"]))
        if care is None or care.is_open or care.status == VisitStatus.CANCELLED:
            return  # the close this timer was planned for did not happen; closing it later plans again
        following = domain.following_care(self.policy, care, datetime.now(UTC))
        care_plan = domain.VisitPlan(VisitKind.CARE, following.due_at, following.deadline_at)
        if not await contactable(self.preferences, [care_plan], care.customer_id):
            log.info("care cycle ends: the customer declined care calls", extra={"ticket_id": care.ticket_id})
            return
        if await self.store.create(following):
            VISITS_SCHEDULED.labels(VisitKind.CARE.value).inc()

    async def _timer_target(self, timer: Timer) -> tuple[Visit, int] | None:
        """Return the visit a due/overdue timer is for and the timer's schedule (`seq`)."""
        visit_id, seq = str(timer.payload["visit_id"]), int(timer.payload.get("seq", 1))
        visit = await self.store.find_visit(visit_id)
        if visit is None or visit.seq < seq:
            if timer.attempts < NOT_WRITTEN_RETRIES:
                raise RetryLater(f"visit {visit_id} schedule {seq} not written yet")
            return None
        return visit, seq

    async def _plan_next_care(self, care: Visit) -> None:
        # A durable timer, scheduled before the care visit closes, creates the next one: a crash between
        # the two writes cannot end the customer's care cycle. It fires a little later so the close is
        # written first; if the close never happened (a lost race), the handler does nothing.
        await self.store.schedule_next_care(care, datetime.now(UTC) + NEXT_CARE_DELAY)

    # ------------------------------------------------------------------ gauges and repairs

    async def refresh_gauges(self) -> None:
        VISITS_DUE.set((await self.store.count_open()).get(VisitStatus.DUE.value, 0))

    def gauge_refresher(self, interval_s: float) -> BackgroundTask:
        """Return a background task that keeps the gauges right (other replicas change visits too)."""
        return periodic(self.refresh_gauges, interval_s, what="gauge refresh")

    def open_index_healer(self, interval_s: float) -> BackgroundTask:
        """Return a background task correcting the open-visits index after crashes or lost races."""
        return periodic(
            self.store.heal_open_index, interval_s, what="open-visits index heal", wait_first=True
        )


def _facts_missing(policy: FollowUpPolicy, res: Resolution) -> None:
    """A resolution read before its ticket's facts: retry (the consumer backs off, the facts' own topic
    goes on) while they may still come; past `facts_wait` plan without them, and say so."""
    if datetime.now(UTC) - res.resolved_at < policy.facts_wait:
        raise RetryLater(f"ticket {res.ticket_id}: its facts have not arrived yet")
    RESOLUTIONS_WITHOUT_FACTS.inc()
    log.warning("visits planned without the ticket's facts", extra={"ticket_id": res.ticket_id})
