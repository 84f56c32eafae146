"""Follow-up use cases: what happens on a resolution, a ticket change, an agent's action or a timer.

The edges (api.py, consumers.py) call these; the rules come from domain.py, the writes from store.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from aftersales.followup import domain
from aftersales.followup.domain import FollowUpPolicy, Resolution, Visit, VisitStatus
from aftersales.followup.metrics import (
    VISIT_OUTCOMES,
    VISITS_CANCELLED,
    VISITS_DUE,
    VISITS_OVERDUE,
    VISITS_SCHEDULED,
)
from aftersales.followup.store import VisitStore, visit_from
from aftersales.shared.contracts.common import CustomerTier
from aftersales.shared.contracts.events import VisitKind, VisitOutcome
from aftersales.shared.pii import redact_optional
from aftersales.shared.runtime import BackgroundTask, periodic
from aftersales.shared.timers import Timer

log = logging.getLogger("aftersales.followup")

TIMER_NEXT_CARE = "care_next"
NEXT_CARE_DELAY = timedelta(seconds=10)


class FollowUps:
    def __init__(self, store: VisitStore, policy: FollowUpPolicy) -> None:
        self.store = store
        self.policy = policy

    async def on_resolved(self, res: Resolution) -> list[Visit]:
        """Schedule the visits the policy asks for after a resolution; return the ones created now."""
        if await self.store.ticket_status(res.ticket_id) == "cancelled":
            log.info("resolution of a cancelled ticket: no visits", extra={"ticket_id": res.ticket_id})
            return []
        customer = await self.store.customer_of(res.ticket_id)
        needs_care = not await self.store.has_open_care(customer.customer_id)
        care_n = (
            await self.store.care_sequence(customer.customer_id) if needs_care and customer.customer_id else 1
        )
        created: list[Visit] = []
        for plan in domain.plan_visits(self.policy, res, customer, needs_care=needs_care):
            visit = domain.new_visit(plan, res, customer, care_n=care_n)
            if await self.store.create(visit, customer.tier):
                VISITS_SCHEDULED.labels(visit.kind.value).inc()
                created.append(visit)
        if created:
            log.info(
                "visits scheduled",
                extra={
                    "ticket_id": res.ticket_id,
                    "round": res.round,
                    "kinds": [v.kind.value for v in created],
                },
            )
        return created

    async def cancel_ticket_visits(self, ticket_id: str, reason: str) -> int:
        """Cancel the ticket's open callbacks and on-site checks (care visits belong to the customer)."""
        cancelled = 0
        for visit in await self.store.open_visits(ticket_id):
            if visit.kind != VisitKind.CARE and await self.store.cancel(visit, reason):
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
        before = visit_from(await self.store.get(visit_id))
        decision = domain.record_outcome(self.policy, before, outcome, datetime.now(UTC))
        if domain.Effect.NEXT_CARE in decision.effects:
            await self._plan_next_care(before)
        after = await self.store.apply_decision(
            before,
            decision,
            by=agent,
            note=redact_optional(note),
            action=f"outcome:{outcome.value}",
            on_behalf_of=on_behalf_of,
        )
        VISIT_OUTCOMES.labels(before.kind.value, outcome.value).inc()
        await self.refresh_gauges()
        return after

    async def reschedule(
        self, visit_id: str, due_at: datetime, *, by: str, agent_id: str | None, note: str | None
    ) -> Visit:
        before = visit_from(await self.store.get(visit_id))
        after = domain.reschedule(self.policy, before, due_at, datetime.now(UTC), agent_id)
        result = await self.store.reschedule(before, after, by=by, note=redact_optional(note))
        await self.refresh_gauges()
        return result

    async def on_timer(self, timer: Timer) -> None:
        visit_id, seq = str(timer.payload["visit_id"]), int(timer.payload.get("seq", 1))
        if timer.kind == "visit_due":
            if await self.store.fire_due(timer.id, visit_id, seq, timer.attempts):
                await self.refresh_gauges()
        elif timer.kind == "visit_overdue":
            doc = await self.store.visits.find_one({"_id": visit_id})
            if (
                doc is not None
                and visit_from(doc).kind == VisitKind.CARE
                and domain.goes_missed(visit_from(doc), seq)
            ):
                await self._plan_next_care(visit_from(doc))
            if await self.store.fire_overdue(timer.id, visit_id, seq, timer.attempts):
                VISITS_OVERDUE.inc()
                await self.refresh_gauges()
        elif timer.kind == TIMER_NEXT_CARE:
            await self._create_next_care(visit_id)
        else:
            log.warning("unknown timer kind ignored", extra={"timer_kind": timer.kind})

    async def _plan_next_care(self, care: Visit) -> None:
        # A durable timer, scheduled before the care visit closes, creates the next one: a crash between
        # the two writes cannot end the customer's care cycle. It fires a little later so the close is
        # written first; if the close never happened (a lost race), the handler does nothing.
        await self.store.runtime.timers.schedule(
            f"{care.id}:next_care",
            TIMER_NEXT_CARE,
            datetime.now(UTC) + NEXT_CARE_DELAY,
            {"visit_id": care.id},
        )

    async def _create_next_care(self, visit_id: str) -> None:
        doc = await self.store.visits.find_one({"_id": visit_id})
        if doc is None:
            return
        care = visit_from(doc)
        if care.is_open or care.status == VisitStatus.CANCELLED:
            return  # the close this timer was planned for did not happen; closing it later plans again
        following = domain.following_care(self.policy, care, datetime.now(UTC))
        tier = doc.get("customer_tier", CustomerTier.KEY_ACCOUNT.value)
        if await self.store.create(following, CustomerTier(tier)):
            VISITS_SCHEDULED.labels(VisitKind.CARE.value).inc()

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
