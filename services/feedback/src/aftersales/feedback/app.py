"""Feedback service wiring: settings, the runtime, consumers, complaint timers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType
from typing import Self

from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator

from aftersales.feedback import api, consumers, timers
from aftersales.feedback.domain import ComplaintPolicy
from aftersales.feedback.export import FeedbackExport
from aftersales.feedback.privacy import PersonalData
from aftersales.feedback.retention import FeedbackRetention
from aftersales.feedback.service import Complaints, SurveyPolicy, Surveys
from aftersales.feedback.store import (
    COMPLAINTS,
    INDEXES,
    SURVEYS,
    ComplaintStore,
    SurveyStore,
    TicketFactsStore,
)
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.events import ComplaintState
from aftersales.shared.export import EXPORT_ANSWERS, ExportLedger
from aftersales.shared.http import create_app
from aftersales.shared.privacy import ERASURES, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings

DEV_SIGNING_KEY = "dev-survey-signing-key-do-not-use-in-production"
MIN_KEY_CHARS = 32


class Settings(ServiceSettings):
    service_name: str = "feedback"
    http_port: int = Field(default=8004, ge=1, le=65535)

    survey_signing_key: SecretStr = Field(
        default=SecretStr(DEV_SIGNING_KEY),
        description="HMAC-SHA256 key of survey links; the dev default is refused outside development",
    )
    survey_ttl_h: float = Field(default=168, gt=0, le=24 * 90, description="survey links expire after this")
    survey_link_base_url: str = Field(
        default="",
        max_length=500,
        description="customer-facing prefix of survey links (the token is appended); "
        "empty: this service itself, http://127.0.0.1:<HTTP_PORT>/v1/surveys/",
    )
    complaint_csat_threshold: int = Field(
        default=2, ge=1, le=5, description="CSAT at or below opens a complaint"
    )
    complaint_ack_h: float = Field(default=24, gt=0, description="acknowledge (start investigating) within")
    complaint_investigate_h: float = Field(default=72, gt=0)
    complaint_propose_h: float = Field(
        default=48, gt=0, description="reply after proposing a resolution within"
    )
    complaint_reply_h: float = Field(default=72, gt=0, description="close after replying within")
    complaint_close_days: float = Field(default=7, gt=0, description="close a complaint within")
    common_cause_threshold: int = Field(
        default=3, ge=2, le=1000, description="complaints that make a common cause"
    )
    common_cause_window_days: float = Field(default=30, gt=0)
    complaint_max_steps: int = Field(
        default=50, ge=1, le=500, description="workflow steps one complaint may take (bounds its history)"
    )
    retention_survey_comments_days: float = Field(
        default=1095,
        ge=0,
        description="a customer's comment on a survey answer is removed this many days after it was "
        "written (0: kept without limit)",
    )
    retention_complaint_texts_days: float = Field(
        default=1095,
        ge=0,
        description="a complaint's summary and step notes are removed this many days after the complaint "
        "last changed (0: kept without limit)",
    )

    @model_validator(mode="after")
    def _refuse_unsafe_signing_key(self) -> Self:
        if self.environment != "development":  # test too: the suite passes its own key
            key = self.survey_signing_key.get_secret_value()
            if key == DEV_SIGNING_KEY:
                raise ValueError(f"the development survey signing key is not allowed in {self.environment}")
            if len(key) < MIN_KEY_CHARS:
                raise ValueError(f"SURVEY_SIGNING_KEY must be at least {MIN_KEY_CHARS} characters")
        return self

    def complaint_policy(self) -> ComplaintPolicy:
        hours = {
            ComplaintState.RECEIVED: self.complaint_ack_h,
            ComplaintState.INVESTIGATING: self.complaint_investigate_h,
            ComplaintState.RESOLUTION_PROPOSED: self.complaint_propose_h,
            ComplaintState.REPLIED: self.complaint_reply_h,
        }
        return ComplaintPolicy(
            step_deadlines=MappingProxyType({s: timedelta(hours=h) for s, h in hours.items()}),
            close_within=timedelta(days=self.complaint_close_days),
            common_cause_threshold=self.common_cause_threshold,
            common_cause_window=timedelta(days=self.common_cause_window_days),
            max_steps=self.complaint_max_steps,
        )

    def survey_link_base(self) -> str:
        return self.survey_link_base_url or f"http://127.0.0.1:{self.http_port}/v1/surveys/"

    def survey_policy(self) -> SurveyPolicy:
        return SurveyPolicy(
            ttl=timedelta(hours=self.survey_ttl_h), complaint_csat_threshold=self.complaint_csat_threshold
        )


def build(settings: Settings) -> FastAPI:
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.FEEDBACK, Topic.PRIVACY],
            outbox_collections=[SURVEYS, COMPLAINTS, ERASURES, EXPORT_ANSWERS],
            indexes=INDEXES,
        ),
    )
    survey_policy = settings.survey_policy()
    survey_store, tickets = SurveyStore(runtime), TicketFactsStore(runtime.db)
    surveys = Surveys(
        survey_store,
        survey_policy,
        settings.survey_signing_key.get_secret_value().encode(),
        settings.survey_link_base(),
    )
    complaint_store = ComplaintStore(runtime)
    complaints = Complaints(complaint_store, tickets, settings.complaint_policy(), survey_policy)
    personal_data = PersonalData(
        surveys=survey_store,
        complaints=complaint_store,
        tickets=tickets,
        ledger=ErasureLedger(runtime, service="feedback"),
    )
    runtime.spec.extra_tasks.append(complaints.gauge_refresher(settings.timer_poll_interval_s * 5))
    runtime.spec.extra_tasks.append(complaints.open_index_healer(600.0))
    export = FeedbackExport(
        surveys=survey_store,
        complaints=complaint_store,
        personal_data=personal_data,
        ledger=ExportLedger(runtime, service="feedback"),
    )
    consumers.register(runtime, surveys, complaints, personal_data, export.on_export_requested)
    timers.register(runtime, complaints)
    retention = FeedbackRetention(runtime, survey_store, complaint_store, settings)
    app = create_app(
        runtime,
        title="aftersales feedback",
        description="Satisfaction surveys (CSAT/NPS) per resolution and the complaint (投诉) workflow.",
        routers=[api.surveys_router, api.complaints_router],
    )
    app.state.surveys = surveys
    app.state.complaints = complaints
    app.state.retention = retention
    return app
