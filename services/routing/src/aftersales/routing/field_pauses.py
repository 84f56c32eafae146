"""Fieldwork's events on a work order's resolution clock: a wait for parts pauses it until the next
check-in or signed report, and a later visit window the customer chose is customer time (as the SLA
policy's `pause_on` says). Each event re-plans the clocks in one write guarded by the round, the clock
generations and the holds' version; a lost guard re-reads and decides again."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from aftersales.routing import field_holds
from aftersales.routing.clocks import clock_running, now_utc, pauses_of
from aftersales.routing.domain import OPEN_STATUSES, WorkOrder
from aftersales.routing.field_holds import FieldHolds, holds_fields, resolution_pauses
from aftersales.routing.grids import GridDirectory
from aftersales.routing.sla_clocks import SlaClocks, clocks_as_read
from aftersales.routing.store import Guard, RoutingStore
from aftersales.shared.calendar import add_business_time
from aftersales.shared.contracts.events import SlaClock
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    ServiceReportSigned,
    VisitCheckedIn,
    WorkOrderWaitingForParts,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.errors import RetryLater

log = logging.getLogger("aftersales.routing")
ATTEMPTS = 3
Decide = Callable[[WorkOrder], Awaitable[FieldHolds | None]]


@dataclass(frozen=True, slots=True)
class FieldPauses:
    """The handlers of fieldwork's events that pause or move the resolution clock."""

    store: RoutingStore
    grids: GridDirectory
    clocks: SlaClocks

    # ------------------------------------------------------------------ event handlers

    async def on_waiting_for_parts(self, model: WorkOrderWaitingForParts, event: CloudEvent) -> None:
        at, part = model.occurred_at, model.part_id
        await self._apply(
            model.ticket_id, at, lambda wo: _ready(field_holds.parts_waiting(wo.fieldwork, at, part))
        )

    async def on_checked_in(self, model: VisitCheckedIn, event: CloudEvent) -> None:
        await self._resumed(model.ticket_id, model.occurred_at)

    async def on_report_signed(self, model: ServiceReportSigned, event: CloudEvent) -> None:
        await self._resumed(model.ticket_id, model.signed_at)

    async def on_booked(self, model: AppointmentBooked, event: CloudEvent) -> None:
        chosen_by = model.chosen_by or ("customer" if model.booked_by == "channel" else "desk")
        await self._window(
            model.ticket_id, model.appointment_id, model.occurred_at, chosen_by, model.window_start
        )

    async def on_rescheduled(self, model: AppointmentRescheduled, event: CloudEvent) -> None:
        at = model.occurred_at
        await self._window(model.ticket_id, model.appointment_id, at, model.chosen_by, model.window_start)

    async def on_cancelled(self, model: AppointmentCancelled, event: CloudEvent) -> None:
        at, appointment = model.occurred_at, model.appointment_id

        async def decide(wo: WorkOrder) -> FieldHolds | None:
            return field_holds.window_cancelled(wo.fieldwork, appointment_id=appointment, at=at)

        await self._apply(model.ticket_id, at, decide)

    # ------------------------------------------------------------------ rules applied

    async def _resumed(self, ticket_id: str, at: datetime) -> None:
        await self._apply(ticket_id, at, lambda wo: _ready(field_holds.work_resumed(wo.fieldwork, at)))

    async def _window(
        self, ticket_id: str, appointment_id: str, at: datetime, chosen_by: str | None, start: datetime
    ) -> None:
        async def decide(wo: WorkOrder) -> FieldHolds | None:
            return field_holds.window_chosen(
                wo.fieldwork,
                appointment_id=appointment_id,
                at=at,
                chosen_by=chosen_by,
                window_start=start,
                due_without=await self.due_without(wo, appointment_id, at),
            )

        await self._apply(ticket_id, at, decide)

    async def due_without(self, wo: WorkOrder, appointment_id: str, at: datetime) -> datetime | None:
        """Return when the resolution clock would be due without this appointment's customer time (open
        pauses taken as ending at `at`), or None when it does not run."""
        if not clock_running(wo, SlaClock.RESOLUTION):
            return None
        state = wo.sla[SlaClock.RESOLUTION.value]
        pause_on = (await self.store.cached_policy()).pause_on
        field = resolution_pauses(wo.fieldwork, pause_on, exclude_appointment=appointment_id)
        pauses = [(a, at if b is None else b) for a, b in [*pauses_of(wo), *field]]
        calendar = (await self.grids.view()).calendar_of(wo.grid_id)
        return add_business_time(state["started_at"], state["target_minutes"], calendar, pauses)

    async def _apply(self, ticket_id: str, at: datetime, decide: Decide) -> None:
        """Decide on the current round's work order and write the holds with the re-planned clocks; an
        event from before the round started, or for a work order that ended, changes nothing."""
        for _ in range(ATTEMPTS):
            wo = await self.store.load_work_order(ticket_id)
            if wo is None or wo.status not in OPEN_STATUSES or at < wo.started_at:
                if wo is None:
                    log.info("fieldwork event for an unknown work order", extra={"ticket_id": ticket_id})
                return
            after = await decide(wo)
            if after is None or await self._write(wo, after):
                return
        raise RetryLater(f"work order {ticket_id} changed on each of {ATTEMPTS} attempts; decide again")

    async def _write(self, wo: WorkOrder, after: FieldHolds) -> bool:
        held = replace(wo, fieldwork=replace(after, version=wo.fieldwork.version + 1))
        changes = await self.clocks.replan(held, pauses_of(wo))
        changes |= {"fieldwork": holds_fields(held.fieldwork), "updated_at": now_utc()}
        guard = Guard(
            round=wo.round, status=wo.status, fieldwork_version=wo.fieldwork.version, **clocks_as_read(wo)
        )
        if not await self.store.write_work_order(wo.ticket_id, guard, changes):
            return False  # its clocks' new timers find another generation and do nothing
        await self.clocks.retire(wo, changes)
        return True


async def _ready(value: FieldHolds | None) -> FieldHolds | None:
    return value
