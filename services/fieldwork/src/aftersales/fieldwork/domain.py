"""Fieldwork's rules for work orders and appointments: whose work a ticket is (from routing's events),
who may act on it, and the life of a visit (booked, rescheduled, en route, checked in, checked out,
no-show, cancelled). Pure functions over plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from aftersales.fieldwork.hours import UNKNOWN, BookingHours
from aftersales.shared.aggregate import Decision
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentNoShow,
    AppointmentRescheduled,
    VisitCheckedIn,
    VisitCheckedOut,
    VisitDeparted,
    WorkOrderWaitingForParts,
)
from aftersales.shared.errors import Conflict, Forbidden, InvalidRequest, NotFound

MAX_WINDOW = timedelta(hours=12)
MAX_AHEAD = timedelta(days=366)  # how far ahead a visit may be booked


def to_ms(at: datetime) -> datetime:
    """Return `at` truncated to the millisecond: what the database keeps (a hash over stored times must
    see the same value after a round trip)."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


# ---------------------------------------------------------------- work orders (routing's facts)


class WorkOrderStatus(StrEnum):
    UNASSIGNED = "unassigned"  # the ticket is known (intake) but routing has not assigned it yet
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    CLOSED = "closed"  # the ticket was closed or cancelled: no new visits


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """Fieldwork's copy of a ticket's assignment: who holds it, in which grid, and whose customer it is."""

    ticket_id: str
    status: WorkOrderStatus = WorkOrderStatus.UNASSIGNED
    technician_id: str | None = None
    grid_id: str | None = None
    assignment_at: datetime | None = None  # occurred_at of the newest assignment event applied
    submitted_by: str | None = None  # `http:<channel>`: the channel that may see its customer's visits
    waiting_for: str | None = None  # the part the work order waits for, if any
    closed_at: datetime | None = None  # when the ticket was closed or cancelled
    exists: bool = False  # False: nothing stored yet


def apply_assignment(
    order: WorkOrder, *, technician_id: str | None, grid_id: str, status: WorkOrderStatus, at: datetime
) -> WorkOrder | None:
    """Return the work order after an assignment event, or None when the event is older than what the copy
    already holds (a redelivery, an event overtaken by a newer one, or one from before the ticket closed;
    a newer one, after a reopen, opens the work order again)."""
    if order.assignment_at is not None and at <= order.assignment_at:
        return None
    if order.closed_at is not None and at <= order.closed_at:
        return None
    return replace(
        order,
        status=status,
        technician_id=technician_id or order.technician_id,
        grid_id=grid_id,
        assignment_at=at,
        exists=True,
    )


def authorize(caller: Principal, order: WorkOrder | None, ticket_id: str) -> WorkOrder:
    """Return the work order if the caller may act on it: its technician, the channel that opened the
    ticket, a supervisor or an admin. 404 for a channel's stranger ticket, 403 for another technician's."""
    if order is None or not order.exists:
        raise NotFound(f"work order {ticket_id} not known to fieldwork yet", field="ticket_id")
    if caller.is_staff:
        return order
    if caller.is_technician_only:
        if order.technician_id != caller.subject:
            raise Forbidden(f"work order {ticket_id} is not assigned to {caller.subject}", field="ticket_id")
        return order
    if order.submitted_by != f"http:{caller.subject}":
        raise NotFound(f"work order {ticket_id} not found", field="ticket_id")
    return order


def assigned_technician(order: WorkOrder) -> str:
    """Return the technician holding the work order; 409 when none does or the ticket is closed."""
    if order.status == WorkOrderStatus.CLOSED:
        raise Conflict(f"ticket {order.ticket_id} is closed", field="ticket_id")
    if order.technician_id is None:
        raise Conflict(f"work order {order.ticket_id} has no technician assigned yet", field="ticket_id")
    return order.technician_id


def wait_for_parts(order: WorkOrder, part_id: str, quantity: int, now: datetime) -> Decision[WorkOrder]:
    """Return the work order waiting for a part (no event when it already waits for that part)."""
    technician = assigned_technician(order)
    if order.waiting_for == part_id:
        return Decision(order)
    event = WorkOrderWaitingForParts(
        ticket_id=order.ticket_id,
        technician_id=technician,
        part_id=part_id,
        quantity=quantity,
        occurred_at=now,
    )
    return Decision(replace(order, waiting_for=part_id), (event,))


# ---------------------------------------------------------------- appointments


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    EN_ROUTE = "en_route"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"  # checked out
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"


NOT_STARTED = frozenset({AppointmentStatus.BOOKED, AppointmentStatus.EN_ROUTE})


class Booker(StrEnum):
    CHANNEL = "channel"
    DESK = "desk"
    TECHNICIAN = "technician"


@dataclass(frozen=True, slots=True)
class Point:
    """Where a check-in or check-out happened (kept in fieldwork only: it is the customer's address)."""

    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    ticket_id: str
    technician_id: str
    window_start: datetime
    window_end: datetime
    status: AppointmentStatus = AppointmentStatus.BOOKED
    booked_by: Booker = Booker.DESK
    reschedules: int = 0
    departed_at: datetime | None = None
    checked_in_at: datetime | None = None
    check_in_point: Point | None = None
    checked_out_at: datetime | None = None
    check_out_point: Point | None = None
    work_done: str | None = None
    no_show: str | None = None  # who was absent
    calendar_checked: bool = False  # the window was checked against its grid's calendar (see hours.py)
    version: int = 0

    @property
    def travel_s(self) -> int | None:
        if self.departed_at is None or self.checked_in_at is None:
            return None
        return max(0, int((self.checked_in_at - self.departed_at).total_seconds()))

    @property
    def work_s(self) -> int | None:
        if self.checked_in_at is None or self.checked_out_at is None:
            return None
        return max(0, int((self.checked_out_at - self.checked_in_at).total_seconds()))


def check_window(start: datetime, end: datetime, now: datetime) -> None:
    """Refuse a window that is empty, longer than 12 hours, already over or more than a year ahead (422
    naming the field)."""
    if end <= start:
        raise InvalidRequest("window_end: must be after window_start", field="window_end")
    if end - start > MAX_WINDOW:
        raise InvalidRequest("window_end: a window is at most 12 hours long", field="window_end")
    if end <= now:
        raise InvalidRequest("window_end: the window is already over", field="window_end")
    if start > now + MAX_AHEAD:
        raise InvalidRequest("window_start: at most a year ahead", field="window_start")


def book(
    appointment_id: str,
    order: WorkOrder,
    window: tuple[datetime, datetime],
    booked_by: Booker,
    now: datetime,
    hours: BookingHours = UNKNOWN,
) -> Decision[Appointment]:
    """Return a new appointment for the work order's technician in the window, which must lie in the
    grid's business hours and the technician's shift (`hours`; unchecked without a copy of the calendar)."""
    technician = assigned_technician(order)
    check_window(*window, now)
    checked = hours.check(*window)
    booked = Appointment(
        id=appointment_id,
        ticket_id=order.ticket_id,
        technician_id=technician,
        window_start=to_ms(window[0]),
        window_end=to_ms(window[1]),
        booked_by=booked_by,
        calendar_checked=checked,
    )
    event = AppointmentBooked(
        **_ids(booked, now),
        window_start=booked.window_start,
        window_end=booked.window_end,
        booked_by=booked_by.value,
        chosen_by="customer" if booked_by is Booker.CHANNEL else "desk",
    )
    return Decision(booked, (event,))


def _ids(appointment: Appointment, now: datetime) -> dict[str, object]:
    return {
        "appointment_id": appointment.id,
        "ticket_id": appointment.ticket_id,
        "technician_id": appointment.technician_id,
        "occurred_at": now,
    }


def _require(appointment: Appointment, allowed: frozenset[AppointmentStatus], action: str) -> None:
    if appointment.status not in allowed:
        raise Conflict(
            f"appointment {appointment.id} is {appointment.status.value}: cannot {action}", field="status"
        )


def reschedule(
    appointment: Appointment,
    order: WorkOrder,
    window: tuple[datetime, datetime],
    now: datetime,
    chosen_by: Literal["customer", "desk"] | None = None,
    hours: BookingHours = UNKNOWN,
) -> Decision[Appointment]:
    """Return the appointment moved to a new window (to the work order's current technician), inside the
    grid's business hours and the technician's shift (`hours`); the same window again changes nothing."""
    _require(appointment, NOT_STARTED, "reschedule")
    technician = assigned_technician(order)
    check_window(*window, now)
    start, end = to_ms(window[0]), to_ms(window[1])
    if (start, end, technician) == (
        appointment.window_start,
        appointment.window_end,
        appointment.technician_id,
    ):
        return Decision(appointment)
    moved = replace(
        appointment,
        window_start=start,
        window_end=end,
        technician_id=technician,
        status=AppointmentStatus.BOOKED,
        departed_at=None,
        reschedules=appointment.reschedules + 1,
        calendar_checked=hours.check(*window),
    )
    event = AppointmentRescheduled(
        **_ids(moved, now),
        window_start=start,
        window_end=end,
        previous_window_start=appointment.window_start,
        reschedules=moved.reschedules,
        chosen_by=chosen_by,
    )
    return Decision(moved, (event,))


def depart(appointment: Appointment, now: datetime) -> Decision[Appointment]:
    """Return the appointment with the technician on the way (travel time starts); a repeat is a no-op."""
    if appointment.status == AppointmentStatus.EN_ROUTE:
        return Decision(appointment)
    _require(appointment, frozenset({AppointmentStatus.BOOKED}), "depart")
    on_the_way = replace(appointment, status=AppointmentStatus.EN_ROUTE, departed_at=to_ms(now))
    return Decision(on_the_way, (VisitDeparted(**_ids(on_the_way, now)),))


def check_in(
    appointment: Appointment, order: WorkOrder, at: datetime, point: Point | None
) -> Decision[Appointment]:
    """Return the appointment checked in on site by the work order's technician."""
    if appointment.status == AppointmentStatus.CHECKED_IN:
        return Decision(appointment)
    _require(appointment, NOT_STARTED, "check in")
    technician = assigned_technician(order)
    arrived = replace(
        appointment,
        status=AppointmentStatus.CHECKED_IN,
        technician_id=technician,
        checked_in_at=to_ms(at),
        check_in_point=point,
    )
    return Decision(arrived, (VisitCheckedIn(**_ids(arrived, at), travel_s=arrived.travel_s),))


def check_out(
    appointment: Appointment, at: datetime, point: Point | None, work_done: str
) -> Decision[Appointment]:
    """Return the appointment checked out, with the work done on site."""
    if appointment.status == AppointmentStatus.COMPLETED:
        return Decision(appointment)
    _require(appointment, frozenset({AppointmentStatus.CHECKED_IN}), "check out")
    left = replace(
        appointment,
        status=AppointmentStatus.COMPLETED,
        checked_out_at=to_ms(at),
        check_out_point=point,
        work_done=work_done,
    )
    return Decision(left, (VisitCheckedOut(**_ids(left, at), work_s=left.work_s or 0),))


def record_no_show(appointment: Appointment, absent: str, now: datetime) -> Decision[Appointment]:
    """Return the appointment recorded as a no-show of the customer or the technician."""
    if appointment.status == AppointmentStatus.NO_SHOW:
        return Decision(appointment)
    _require(appointment, NOT_STARTED, "record a no-show")
    missed = replace(appointment, status=AppointmentStatus.NO_SHOW, no_show=absent)
    return Decision(missed, (AppointmentNoShow(**_ids(missed, now), absent=absent),))


def cancel(appointment: Appointment, reason: str, now: datetime) -> Decision[Appointment]:
    """Return the appointment called off; an appointment already over is left as it is."""
    if appointment.status not in NOT_STARTED:
        return Decision(appointment)
    called_off = replace(appointment, status=AppointmentStatus.CANCELLED)
    return Decision(called_off, (AppointmentCancelled(**_ids(called_off, now), reason=reason),))
