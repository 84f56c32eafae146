"""Feedback use cases: send a survey per resolution, take an answer, open and walk complaints, fire
complaint deadlines. The edges (api.py, consumers.py) call these."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aftersales.feedback import domain, messages, tokens
from aftersales.feedback.domain import Complaint, ComplaintPolicy, ComplaintSource, SurveyStatus
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
from aftersales.feedback.store import FeedbackStore, complaint_from
from aftersales.shared.contracts.common import Category
from aftersales.shared.contracts.events import ComplaintScope, ComplaintState, SurveySent, SurveySubmitted
from aftersales.shared.errors import DomainError, NotFound, RetryLater
from aftersales.shared.pii import redact_optional
from aftersales.shared.runtime import BackgroundTask, periodic
from aftersales.shared.timers import Timer

log = logging.getLogger("aftersales.feedback")

TIMER_STEP, TIMER_CLOSE = "complaint_step_overdue", "complaint_close_overdue"
NOT_WRITTEN_RETRIES = 4


class NotWrittenYet(RetryLater):
    """A timer fired before the write it was scheduled for landed; the sweeper retries it shortly."""


@dataclass(frozen=True, slots=True)
class SurveyPolicy:
    ttl: timedelta = timedelta(days=7)
    complaint_csat_threshold: int = 2


class Feedback:
    def __init__(
        self, store: FeedbackStore, complaints: ComplaintPolicy, surveys: SurveyPolicy, signing_key: bytes
    ) -> None:
        self.store = store
        self.policy = complaints
        self.survey_policy = surveys
        self._key = signing_key

    # ------------------------------------------------------------------ surveys

    def token_for(self, survey: Mapping[str, Any]) -> str:
        return tokens.sign(survey["_id"], survey["expires_at"], self._key)

    async def send_survey(self, ticket_id: str, round_: int, technician_id: str | None) -> bool:
        """Create the one survey of this resolution (ticket, round); False when it exists already."""
        now = datetime.now(UTC).replace(microsecond=0)
        survey_id = f"SV-{ticket_id}-r{round_}"
        expires_at = now + self.survey_policy.ttl
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
        )
        if not await self.store.insert_survey(doc, [sent]):
            return False
        SURVEYS_SENT.inc()
        log.info("survey sent", extra={"ticket_id": ticket_id, "round": round_})
        return True

    async def submit(self, token: str, csat: int, nps: int | None, comment: str | None) -> dict[str, Any]:
        """Record a customer's answer through a signed, single-use, unexpired token."""
        now = datetime.now(UTC)
        try:
            claim = tokens.verify(token, self._key, now)
            survey = await self.store.survey(claim.survey_id)
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
            if not await self.store.submit_survey(
                survey["_id"], answer, [submitted], survey["ticket_id"], now
            ):
                # Lost a race with another answer (or the clock passed expiry): say which.
                latest = await self.store.survey(survey["_id"])
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

    # ------------------------------------------------------------------ complaints

    async def open_complaint(
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
        existing = await self.store.complaints.find_one({"_id": complaint_id})
        if existing is not None:
            return complaint_from(existing), False
        facts = await self.store.ticket(ticket_id) or {}
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
        await self._schedule_timers(complaint)
        extra = {
            "class_key": key,
            "summary": redact_optional(summary),
            "opened_by": opened_by,
            "survey_id": survey_id,
        }
        if not await self.store.insert_complaint(
            complaint, extra, [messages.opened(complaint, now, survey_id)], now
        ):
            again = await self.store.complaints.find_one({"_id": complaint_id})
            assert again is not None
            return complaint_from(again), False
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
            with contextlib.suppress(DomainError):  # it moved meanwhile; the next complaint retries
                await self.store.save_complaint(
                    other,
                    changed,
                    [messages.updated(changed, now, change="reclassified", previous=other.state)],
                    now,
                    action="reclassified:common_cause",
                    guard_scope=True,
                )

    async def transition(
        self, complaint_id: str, target: ComplaintState, *, owner_id: str | None, by: str, note: str | None
    ) -> Complaint:
        before = complaint_from(await self.store.complaint_doc(complaint_id))
        now = datetime.now(UTC)
        after = domain.transition(self.policy, before, target, owner_id, now)
        await self._schedule_timers(after)
        change = "reopened" if before.state == ComplaintState.CLOSED else "transition"
        models: list[Any] = [messages.updated(after, now, change=change, previous=before.state)]
        if target == ComplaintState.CLOSED:
            models.append(messages.closed(after, now))
        await self.store.save_complaint(
            before, after, models, now, action=f"to:{target.value}", by=by, note=redact_optional(note)
        )
        for timer_id in self._stale_timers(before, after):
            await self.store.runtime.timers.cancel(timer_id)
        if target == ComplaintState.CLOSED:
            COMPLAINTS_CLOSED.labels(str(domain.within_deadline(after)).lower()).inc()
        await self.refresh_gauges()
        return after

    async def _schedule_timers(self, c: Complaint) -> None:
        timers = self.store.runtime.timers
        if c.step_deadline_at is not None:
            payload = {"complaint_id": c.id, "seq": c.seq}
            await timers.schedule(f"{c.id}:step:{c.seq}", TIMER_STEP, c.step_deadline_at, payload, group=c.id)
        if c.state != ComplaintState.CLOSED:
            payload = {"complaint_id": c.id, "cycle": c.cycle}
            await timers.schedule(f"{c.id}:close:{c.cycle}", TIMER_CLOSE, c.deadline_at, payload, group=c.id)

    @staticmethod
    def _stale_timers(before: Complaint, after: Complaint) -> list[str]:
        stale = [f"{before.id}:step:{before.seq}"] if after.seq != before.seq else []
        if after.state == ComplaintState.CLOSED or after.cycle != before.cycle:
            stale.append(f"{before.id}:close:{before.cycle}")
        return stale

    async def on_timer(self, timer: Timer) -> None:
        complaint_id = str(timer.payload["complaint_id"])
        doc = await self.store.complaints.find_one({"_id": complaint_id})
        written = doc is not None and (
            doc.get("seq", 1) >= int(timer.payload.get("seq", 0))
            and doc.get("cycle", 0) >= int(timer.payload.get("cycle", 0))
        )
        if not written:
            # Timers are scheduled just before their write: "not there" may mean "not written yet".
            if timer.attempts < NOT_WRITTEN_RETRIES:
                raise NotWrittenYet(f"complaint {complaint_id} change not written yet")
            return
        assert doc is not None
        c = complaint_from(doc)
        if timer.kind == TIMER_STEP:
            seq = int(timer.payload["seq"])
            if not domain.step_overdue(c, seq):
                return
            guard: dict[str, Any] = {"seq": seq, "state": c.state.value}
        elif timer.kind == TIMER_CLOSE:
            cycle = int(timer.payload["cycle"])
            if not domain.close_overdue(c, cycle):
                return
            guard = {"cycle": cycle, "state": {"$ne": ComplaintState.CLOSED.value}}
        else:
            log.warning("unknown timer kind ignored", extra={"timer_kind": timer.kind})
            return
        now = datetime.now(UTC)
        escalated = replace(c, escalated=True)
        model = messages.updated(escalated, now, change="overdue", escalated=True)
        if await self.store.escalate(timer.id, c, [model], guard):
            COMPLAINTS_OVERDUE.labels("step" if timer.kind == TIMER_STEP else "close").inc()
            log.warning(
                "complaint overdue: escalated", extra={"ticket_id": c.ticket_id, "state": c.state.value}
            )

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


def _category(value: Any) -> Category | None:
    return Category(value) if value in Category._value2member_map_ else None
