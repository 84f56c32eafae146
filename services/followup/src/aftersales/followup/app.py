"""Follow-up service (回访) wiring: settings, the runtime, consumers, timers and the HTTP app.

`build` only constructs; nothing connects until the app's lifespan starts the runtime.
"""

from __future__ import annotations

from datetime import time, timedelta
from types import MappingProxyType
from typing import Self

from fastapi import FastAPI
from pydantic import Field, model_validator

from aftersales.followup import api, consumers, timers
from aftersales.followup.domain import FollowUpPolicy
from aftersales.followup.export import FollowUpExport
from aftersales.followup.privacy import PersonalData
from aftersales.followup.retention import FollowupRetention
from aftersales.followup.service import FollowUps
from aftersales.followup.store import INDEXES, VISITS, TicketFactsStore, VisitNotes, VisitStore
from aftersales.shared.calendar import BusinessHours, DoNotDisturb
from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Priority
from aftersales.shared.export import EXPORT_ANSWERS, ExportLedger
from aftersales.shared.http import create_app
from aftersales.shared.privacy import ERASURES, ContactPreferenceStore, ErasureLedger
from aftersales.shared.runtime import RuntimeSpec, ServiceRuntime
from aftersales.shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "followup"
    http_port: int = Field(default=8003, ge=1, le=65535)

    callback_business_hours: dict[Priority, float] = Field(
        default_factory=lambda: {Priority.P1: 4.0, Priority.P2: 8.0, Priority.P3: 16.0, Priority.P4: 24.0},
        description="callback target by priority, in business hours (JSON object)",
    )
    callback_delay_s: float = Field(
        default=7200, ge=0, description="a callback becomes due this long after the resolution"
    )
    visit_grace_s: float = Field(default=3600, ge=0, description="open this long past its deadline = missed")
    visit_max_attempts: int = Field(default=3, ge=1, le=10, description="contact attempts before missed")
    visit_retry_after_s: float = Field(default=4 * 3600, gt=0, description="retry delay after unreachable")
    visit_max_reschedules: int = Field(
        default=20, ge=0, le=100, description="times a visit may be moved (bounds its history)"
    )
    care_interval_days: int = Field(default=90, ge=1, le=730, description="periodic care visit interval")
    do_not_disturb_start: time = Field(default=time(21, 0), description="customer-local, e.g. 21:00")
    do_not_disturb_end: time = Field(default=time(9, 0), description="customer-local, e.g. 09:00")
    business_hours_open: time = Field(default=time(9, 0), description="follow-up desk opens (customer-local)")
    business_hours_close: time = Field(
        default=time(18, 0), description="follow-up desk closes (customer-local)"
    )
    business_days: frozenset[int] = Field(
        default=frozenset({0, 1, 2, 3, 4}), description="working weekdays, 0=Monday (JSON list)"
    )
    facts_wait_s: float = Field(
        default=120,
        ge=0,
        description="a resolution read before its ticket's facts is retried this long after it happened, "
        "then planned without them (UTC, standard tier); meanwhile its partition waits",
    )
    retention_visit_notes_days: float = Field(
        default=1095,
        ge=0,
        description="agents' notes on a visit are removed this many days after the visit last changed "
        "(0: kept without limit)",
    )

    @model_validator(mode="after")
    def _sane_business_hours(self) -> Self:
        if self.business_hours_open >= self.business_hours_close:
            raise ValueError("business_hours_open must be before business_hours_close")
        if not self.business_days or not self.business_days <= set(range(7)):
            raise ValueError("business_days must be a non-empty list of weekdays 0..6")
        return self

    def policy(self) -> FollowUpPolicy:
        """Return the follow-up policy these settings describe."""
        defaults = FollowUpPolicy()
        table = {**defaults.callback_business_hours, **self.callback_business_hours}
        return FollowUpPolicy(
            callback_business_hours=MappingProxyType(table),
            callback_delay=timedelta(seconds=self.callback_delay_s),
            grace=timedelta(seconds=self.visit_grace_s),
            max_attempts=self.visit_max_attempts,
            retry_after=timedelta(seconds=self.visit_retry_after_s),
            max_reschedules=self.visit_max_reschedules,
            care_interval=timedelta(days=self.care_interval_days),
            do_not_disturb=DoNotDisturb(self.do_not_disturb_start, self.do_not_disturb_end),
            business_hours=BusinessHours(
                self.business_hours_open, self.business_hours_close, self.business_days
            ),
            facts_wait=timedelta(seconds=self.facts_wait_s),
        )


def build(settings: Settings) -> FastAPI:
    policy = settings.policy()
    runtime = ServiceRuntime(
        settings,
        RuntimeSpec(
            consumes=consumers.CONSUMES,
            produces=[Topic.FOLLOWUPS, Topic.PRIVACY],
            outbox_collections=[VISITS, ERASURES, EXPORT_ANSWERS],
            indexes=INDEXES,
        ),
    )
    visits, tickets = VisitStore(runtime, policy), TicketFactsStore(runtime.db)
    preferences = ContactPreferenceStore(runtime)
    followups = FollowUps(visits, tickets, policy)
    followups.preferences = preferences
    notes = VisitNotes(runtime)
    retention = FollowupRetention(runtime, notes, notes_days=settings.retention_visit_notes_days)
    visits.noted = retention.noted
    personal_data = PersonalData(
        visits=notes,
        tickets=tickets,
        ledger=ErasureLedger(runtime, service="followup"),
        preferences=preferences,
    )
    runtime.spec.extra_tasks.append(followups.gauge_refresher(settings.timer_poll_interval_s * 5))
    runtime.spec.extra_tasks.append(followups.open_index_healer(600.0))
    export = FollowUpExport(
        visits=visits,
        notes=personal_data.visits,
        tickets=tickets,
        ledger=ExportLedger(runtime, service="followup"),
    )
    consumers.register(runtime, followups, personal_data, export.on_export_requested)
    timers.register(runtime, followups)
    app = create_app(
        runtime,
        title="aftersales followup",
        description="Follow-up visits (回访): callbacks, on-site checks and care visits after a resolution.",
        routers=[api.router],
    )
    app.state.followups = followups
    return app
