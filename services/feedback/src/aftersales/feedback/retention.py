"""Retention (PIPL) in feedback: the customer's comment on a survey answer is removed when the answer is
older than `RETENTION_SURVEY_COMMENTS_DAYS`, and a complaint's summary and step notes when the complaint
has not changed for `RETENTION_COMPLAINT_TEXTS_DAYS`, by the erasure's own code
(`SurveyStore.erase_comment`, `ComplaintStore.erase_text`). Scores, states, deadlines and times stay, so
KPIs (CSAT, NPS, complaint counts) keep counting. Scheduling is the shared one
(`aftersales.shared.retention`).

Arming costs the request path nothing: both kinds are armed from feedback's own event stream
(`aftersales.feedback.v1`, which it reads already), in batches, by a consumer group of their own
(`-retention`): a `survey-submitted` with a comment arms its survey, a `complaint-opened` or
`complaint-updated` its complaint (one counter update per bucket, one timer and one push per page).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from aftersales.feedback.store import SOURCE, ComplaintStore, SurveyStore
from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent, PoisonEvent
from aftersales.shared.kafka import Delivery, subscribe
from aftersales.shared.retention import Retention
from aftersales.shared.runtime import ServiceRuntime

SURVEY_COMMENTS = "survey_comments"  # `_id` = survey id
COMPLAINT_TEXTS = "complaint_texts"  # `_id` = complaint id
SURVEY_SUBMITTED = "aftersales.feedback.survey-submitted.v1"
COMPLAINT_CHANGED = frozenset(
    {"aftersales.feedback.complaint-opened.v1", "aftersales.feedback.complaint-updated.v1"}
)


class RetentionSettings(Protocol):
    retention_survey_comments_days: float
    retention_complaint_texts_days: float


class FeedbackRetention:
    """Feedback's kinds of personal data with their periods, armed from its own event stream."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        surveys: SurveyStore,
        complaints: ComplaintStore,
        settings: RetentionSettings,
    ) -> None:
        self.schedule = Retention(runtime, service="feedback")
        self.schedule.kind(
            SURVEY_COMMENTS,
            days=settings.retention_survey_comments_days,
            activity=surveys.comment_activity,
            pseudonymise=lambda survey_id, until: surveys.erase_comment(survey_id, active_until=until),
        )
        self.schedule.kind(
            COMPLAINT_TEXTS,
            days=settings.retention_complaint_texts_days,
            activity=complaints.text_activity,
            pseudonymise=lambda complaint_id, until: complaints.erase_text(complaint_id, active_until=until),
        )
        subscribe(
            runtime.broker,
            runtime.settings,
            [Topic.FEEDBACK],
            self.on_feedback_event,
            group_id=f"aftersales-{runtime.settings.service_name}-retention",
            batch_handler=self.on_feedback_events,
        )

    async def on_feedback_event(self, event: CloudEvent) -> None:
        await self.arm([event])

    async def on_feedback_events(self, deliveries: Sequence[Delivery]) -> None:
        await self.arm([d.event for d in deliveries])

    async def arm(self, events: Sequence[CloudEvent]) -> None:
        """Arm each commented answer and each opened or changed complaint from the event's time."""
        comments: list[tuple[str, datetime]] = []
        complaints: list[tuple[str, datetime]] = []
        for event in events:
            if event.source != SOURCE:
                continue
            if event.type == SURVEY_SUBMITTED and event.data.get("has_comment"):
                comments.append((_id(event, "survey_id"), event.time))
            elif event.type in COMPLAINT_CHANGED:
                complaints.append((_id(event, "complaint_id"), event.time))
        await self.schedule.arm_many(SURVEY_COMMENTS, comments)
        await self.schedule.arm_many(COMPLAINT_TEXTS, complaints)


def _id(event: CloudEvent, name: str) -> str:
    value = event.data.get(name)
    if not isinstance(value, str) or not value:
        raise PoisonEvent(f"{event.type} without a {name}")
    return value
