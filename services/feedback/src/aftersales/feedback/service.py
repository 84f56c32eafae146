"""Feedback use cases: send a survey per resolution and take its answer (`Surveys`); open complaints, walk
them through their workflow and escalate missed deadlines (`Complaints`). The edges (api.py,
consumers.py, timers.py) call these; the rules come from domain.py, the writes from store.py."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pydantic import BaseModel

from aftersales.feedback import domain, messages, tokens
from aftersales.feedback.domain import (
    Complaint,
    ComplaintPolicy,
    ComplaintSource,
    LinkState,
    SurveyStatus,
    SurveySummary,
    opens_complaint,
)
from aftersales.feedback.metrics import (
    COMPLAINTS,
    COMPLAINTS_CLOSED,
    COMPLAINTS_OPEN,
    COMPLAINTS_OVERDUE,
    CSAT,
    NPS,
    SURVEYS_REFUSED,
    SURVEYS_SENT,
    SURVEYS_SUBMITTED,
)
from aftersales.feedback.store import SOURCE, ComplaintStore, SurveyStore, TicketFactsStore
from aftersales.shared.aggregate import Decision, decide_until_written
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import (
    ComplaintScope,
    ComplaintState,
    SurveySent,
    SurveySubmitted,
    TicketCreated,
    TicketFacts,
    TicketReopened,
    WorkOrderResolved,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import DomainError, NotFound, RetryLater
from aftersales.shared.pii import redact_optional
from aftersales.shared.runtime import BackgroundTask, periodic
from aftersales.shared.timers import NOT_WRITTEN_RETRIES, Timer

log = logging.getLogger("aftersales.feedback")

FACT_FIELDS = set(TicketFacts.model_fields)
Escalate = Callable[[str, Complaint, Sequence[BaseModel]], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class SurveyPolicy:
    ttl: timedelta = timedelta(days=7)
    complaint_csat_threshold: int = 2


class Surveys:
    """One survey per resolution, answered once through a signed link."""

    def __init__(self, store: SurveyStore, policy: SurveyPolicy, signing_key: bytes, link_base: str) -> None:
        self.store = store
        self.policy = policy
        self._key = signing_key
        self._link_base = link_base

    def token_for(self, survey: Mapping[str, Any]) -> str:
        return tokens.sign(survey["_id"], survey["expires_at"], self._key)

    def link_for(self, token: str) -> str:
        return f"{self._link_base}{token}"

    async def on_work_order_resolved(self, resolved: WorkOrderResolved, _: CloudEvent) -> None:
        await self.send(resolved.ticket_id, resolved.round, resolved.technician_id)

    async def send(self, ticket_id: str, round_: int, technician_id: str | None) -> bool:
        """Create the one survey of this resolution (ticket, round); False when it exists already."""
        now = datetime.now(UTC).replace(microsecond=0)
        survey_id = f"SV-{ticket_id}-r{round_}"
        expires_at = now + self.policy.ttl
        link = self.link_for(tokens.sign(survey_id, expires_at, self._key))
        doc = {
            "_id": survey_id,
            "ticket_id": ticket_id,
            "round": round_,
            "technician_id": technician_id,
            "status": SurveyStatus.SENT.value,
            "sent_at": now,
            "expires_at": expires_at,
        }
        sent = SurveySent(
            survey_id=survey_id,
            ticket_id=ticket_id,
            round=round_,
            technician_id=technician_id,
            expires_at=expires_at,
            occurred_at=now,
            link=link,  # notify mails it; the document keeps no token (the list signs one on reading)
        )
        if not await self.store.insert(doc, [sent]):
            return False
        SURVEYS_SENT.inc()
        log.info("survey sent", extra={"ticket_id": ticket_id, "round": round_})
        return True

    async def submit(self, token: str, csat: int, nps: int | None, comment: str | None) -> dict[str, Any]:
        """Record a customer's answer through a signed, single-use, unexpired token."""
        now = datetime.now(UTC)
        try:
            claim = tokens.verify(token, self._key, now)
            survey = await self.store.get(claim.survey_id)
            if survey is None:
                raise NotFound("this survey does not exist")
            domain.check_answerable(SurveyStatus(survey["status"]), survey["expires_at"], now)
            answer = {"csat": csat, "nps": nps, "comment": redact_optional(comment), "submitted_at": now}
            submitted = SurveySubmitted(
                survey_id=survey["_id"],
                ticket_id=survey["ticket_id"],
                round=survey["round"],
                technician_id=survey.get("technician_id"),
                csat=csat,
                nps=nps,
                has_comment=bool(comment),
                occurred_at=now,
            )
            if not await self.store.submit(survey["_id"], answer, [submitted], survey["ticket_id"], now):
                # Lost a race with another answer (or the clock passed expiry): say which.
                latest = await self.store.get(survey["_id"])
                assert latest is not None
                domain.check_answerable(SurveyStatus(latest["status"]), latest["expires_at"], now)
                raise domain.SurveyReused("this survey has already been answered; a link works once")
        except DomainError as exc:
            SURVEYS_REFUSED.labels(exc.code).inc()
            raise
        SURVEYS_SUBMITTED.inc()
        CSAT.observe(csat)
        if nps is not None:
            NPS.observe(nps)
        return {**survey, **answer, "status": SurveyStatus.SUBMITTED.value}

    async def link_state(self, token: str) -> tuple[LinkState, dict[str, Any] | None]:
        """Return what a survey link shows its customer now, with the survey while it is open."""
        now = datetime.now(UTC)
        try:
            claim = tokens.verify(token, self._key, now)
            survey = await self.store.get(claim.survey_id)
            if survey is None:  # signed by us, but its survey is gone: as good as forged
                raise tokens.InvalidToken("this survey link is not valid")
            domain.check_answerable(SurveyStatus(survey["status"]), survey["expires_at"], now)
        except DomainError as exc:
            state = domain.LINK_STATE_OF_REFUSAL.get(exc.code)
            if state is None:
                raise
            return state, None
        return LinkState.OPEN, survey

    async def find(self, equal_to: Mapping[str, str | None], limit: int) -> list[dict[str, Any]]:
        """Return the surveys whose fields equal the given values (None: any), oldest first."""
        return await self.store.find(equal_to, limit)

    async def summary(self, ticket_id: str | None) -> SurveySummary:
        """Return the response rate, CSAT and NPS figures of one ticket's surveys, or of all."""
        equal_to = {"ticket_id": ticket_id}
        return domain.summarize(await self.store.count(equal_to), await self.store.answers(equal_to))


class Complaints:
    """The complaint workflow: open (idempotent by id), classify, transition, escalate on deadlines."""

    def __init__(
        self,
        store: ComplaintStore,
        tickets: TicketFactsStore,
        policy: ComplaintPolicy,
        surveys: SurveyPolicy,
    ) -> None:
        self.store = store
        self.tickets = tickets
        self.policy = policy
        self.survey_policy = surveys

    # ------------------------------------------------------------------ events (consumers.py)

    async def on_ticket_created(self, ticket: TicketCreated, event: CloudEvent) -> None:
        await self.tickets.remember(event.id, ticket.model_dump(mode="json", include=FACT_FIELDS))
        if ticket.category == Category.COMPLAINT:  # the complaint channel
            await self.open(
                complaint_id=f"CP-{ticket.ticket_id}-channel",
                source=ComplaintSource.CHANNEL,
                ticket_id=ticket.ticket_id,
                product_model=ticket.product_model,
                opened_by=f"channel:{ticket.channel.value}",
            )

    async def on_ticket_reopened(self, ticket: TicketReopened, event: CloudEvent) -> None:
        await self.tickets.remember(event.id, ticket.model_dump(mode="json", include=FACT_FIELDS))

    async def on_survey_submitted(self, answer: SurveySubmitted, event: CloudEvent) -> None:
        """A low CSAT answer (our own event, durable because it rode the outbox) opens a complaint."""
        if event.source == SOURCE and opens_complaint(
            answer.csat, self.survey_policy.complaint_csat_threshold
        ):
            await self.open(
                complaint_id=f"CP-{answer.survey_id}",
                source=ComplaintSource.LOW_CSAT,
                ticket_id=answer.ticket_id,
                opened_by="survey",
                survey_id=answer.survey_id,
            )

    # ------------------------------------------------------------------ use cases

    async def open(
        self,
        *,
        complaint_id: str,
        source: ComplaintSource,
        ticket_id: str | None,
        category: Category | None = None,
        product_model: str | None = None,
        owner_id: str | None = None,
        summary: str | None = None,
        opened_by: str | None = None,
        survey_id: str | None = None,
    ) -> tuple[Complaint, bool]:
        """Open a complaint (idempotent by id); return it and whether it was created now."""
        existing = await self.store.find_complaint(complaint_id)
        if existing is not None:
            return existing, False
        facts = await self.tickets.get(ticket_id) or {}
        if ticket_id is not None:  # indexed ahead of the complaint: an erasure finds it by the ticket
            await self.tickets.note_complaint(ticket_id, complaint_id)
        category = category or _category(facts.get("category"))
        product_model = product_model or facts.get("product_model")
        now = datetime.now(UTC)
        key = domain.classification_key(category, product_model)
        since = now - self.policy.common_cause_window
        similar = await self.store.count_similar(key, since, complaint_id) if key else 0
        scope = domain.classify(self.policy, key, similar)
        complaint = domain.open_complaint(
            self.policy,
            complaint_id=complaint_id,
            source=source,
            scope=scope,
            now=now,
            ticket_id=ticket_id,
            category=category,
            product_model=product_model,
            owner_id=owner_id,
        )
        await self.store.arm_deadlines(complaint)
        extra = {
            "class_key": key,
            "summary": redact_optional(summary),
            "opened_by": opened_by,
            "survey_id": survey_id,
        }
        if not await self.store.insert(complaint, extra, [messages.opened(complaint, now, survey_id)], now):
            return await self.store.load(complaint_id), False
        COMPLAINTS.labels(source.value, scope.value).inc()
        log.info(
            "complaint opened", extra={"ticket_id": ticket_id, "source": source.value, "scope": scope.value}
        )
        if scope == ComplaintScope.COMMON_CAUSE and key is not None:
            await self._reclassify_common_cause(key, since, now)
        await self.refresh_gauges()
        return complaint, True

    async def _reclassify_common_cause(self, key: str, since: datetime, now: datetime) -> None:
        for other in await self.store.individual_in_window(key, since):
            changed = replace(other, scope=ComplaintScope.COMMON_CAUSE)
            event = messages.updated(changed, now, change="reclassified", previous=other.state)
            # A complaint that moved meanwhile is left as it is: the next complaint of its kind retries.
            await self.store.save(
                other, changed, [event], now, action="reclassified:common_cause", guard_scope=True
            )

    async def transition(
        self, complaint_id: str, target: ComplaintState, *, owner_id: str | None, by: str, note: str | None
    ) -> Complaint:
        """Move the complaint to `target`; return it after the move (409 when the workflow refuses)."""
        now = datetime.now(UTC)

        async def write(before: Complaint, decision: Decision[Complaint]) -> bool:
            after = decision.state
            await self.store.arm_deadlines(after)
            note_ = redact_optional(note)
            if not await self.store.save(
                before, after, decision.events, now, action=f"to:{target.value}", by=by, note=note_
            ):
                return False
            await self.store.disarm_stale_deadlines(before, after)
            return True

        load = partial(self.store.load, complaint_id)
        decide = _transition(self.policy, target, owner_id, now)
        after = (await decide_until_written(load, decide, write, what=f"complaint {complaint_id}")).state
        if target == ComplaintState.CLOSED:
            COMPLAINTS_CLOSED.labels(str(domain.within_deadline(after)).lower()).inc()
        await self.refresh_gauges()
        return after

    async def complaint(self, complaint_id: str) -> dict[str, Any]:
        """Return one complaint as a supervisor reads it, with its history."""
        return await self.store.get(complaint_id)

    async def find(self, equal_to: Mapping[str, str | bool | None], limit: int) -> list[dict[str, Any]]:
        """Return the complaints whose fields equal the given values (None: any), newest first."""
        return await self.store.find(equal_to, limit)

    async def ticket_facts(self, ticket_id: str) -> dict[str, Any] | None:
        return await self.tickets.get(ticket_id)

    # ------------------------------------------------------------------ deadlines (timers.py)

    async def on_step_overdue(self, timer: Timer) -> None:
        c = await self._timer_target(timer)
        if c is not None and domain.step_overdue(c, int(timer.payload["seq"])):
            await self._escalated(timer, c, "step", self.store.escalate_step)

    async def on_close_overdue(self, timer: Timer) -> None:
        c = await self._timer_target(timer)
        if c is not None and domain.close_overdue(c, int(timer.payload["cycle"])):
            await self._escalated(timer, c, "close", self.store.escalate_close)

    async def _timer_target(self, timer: Timer) -> Complaint | None:
        complaint_id = str(timer.payload["complaint_id"])
        c = await self.store.find_complaint(complaint_id)
        seq, cycle = int(timer.payload.get("seq", 0)), int(timer.payload.get("cycle", 0))
        if c is None or c.seq < seq or c.cycle < cycle:
            if timer.attempts < NOT_WRITTEN_RETRIES:
                raise RetryLater(f"complaint {complaint_id} change not written yet")
            return None
        return c

    async def _escalated(self, timer: Timer, c: Complaint, deadline: str, escalate: Escalate) -> None:
        now = datetime.now(UTC)
        model = messages.updated(replace(c, escalated=True), now, change="overdue", escalated=True)
        if await escalate(timer.id, c, [model]):
            COMPLAINTS_OVERDUE.labels(deadline).inc()
            log.warning(
                "complaint overdue: escalated", extra={"ticket_id": c.ticket_id, "state": c.state.value}
            )

    # ------------------------------------------------------------------ gauges and repairs

    async def refresh_gauges(self) -> None:
        for state, count in (await self.store.open_by_state()).items():
            COMPLAINTS_OPEN.labels(state).set(count)

    def gauge_refresher(self, interval_s: float) -> BackgroundTask:
        """Return a background task that keeps the gauges right (other replicas change complaints too)."""
        return periodic(self.refresh_gauges, interval_s, what="gauge refresh")

    def open_index_healer(self, interval_s: float) -> BackgroundTask:
        """Return a background task correcting the open-complaints index after crashes or lost races."""
        heal = self.store.heal_open_index
        return periodic(heal, interval_s, what="open-complaints index heal", wait_first=True)


def _transition(
    policy: ComplaintPolicy, target: ComplaintState, owner_id: str | None, now: datetime
) -> Callable[[Complaint], Decision[Complaint]]:
    """Return the decision of moving a complaint to `target`, as a function of the complaint."""

    def decide(before: Complaint) -> Decision[Complaint]:
        after = domain.transition(policy, before, target, owner_id, now)
        change = "reopened" if before.state == ComplaintState.CLOSED else "transition"
        models: list[Any] = [messages.updated(after, now, change=change, previous=before.state)]
        if target == ComplaintState.CLOSED:
            models.append(messages.closed(after, now))
        return Decision(after, tuple(models))

    return decide


def _category(value: Any) -> Category | None:
    return Category(value) if value in Category._value2member_map_ else None
