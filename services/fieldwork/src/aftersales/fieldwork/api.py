"""HTTP routes of fieldwork's visits: work orders (and waiting for parts), appointments and a technician's
day. They parse, call a use case and shape the answer; who may see which object is decided in service.py.
Reports and stock are in api_reports.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from aftersales.fieldwork import domain
from aftersales.fieldwork.domain import Appointment, AppointmentStatus, Point, WorkOrder
from aftersales.fieldwork.service import Fieldwork
from aftersales.shared.roles import AnyCaller, Staff, service_of
from aftersales.shared.zones import IanaZone

Visits = Annotated[Fieldwork, service_of("fieldwork", Fieldwork)]
Key = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
PartId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Text = Annotated[str, Field(max_length=4000)]


# ---------------------------------------------------------------- work orders


class WorkOrderRead(BaseModel):
    ticket_id: str
    status: str
    technician_id: str | None
    grid_id: str | None
    waiting_for_part: str | None


def _work_order(order: WorkOrder) -> WorkOrderRead:
    return WorkOrderRead(
        ticket_id=order.ticket_id,
        status=order.status.value,
        technician_id=order.technician_id,
        grid_id=order.grid_id,
        waiting_for_part=order.waiting_for,
    )


class PartsWanted(BaseModel):
    part_id: PartId
    quantity: int = Field(default=1, ge=1, le=1000)


work_orders = APIRouter(prefix="/v1/work-orders", tags=["work orders"])


@work_orders.get("/{ticket_id}", summary="Who holds a work order, as fieldwork knows it")
async def get_work_order(ticket_id: Key, caller: AnyCaller, visits: Visits) -> WorkOrderRead:
    return _work_order(await visits.work_order(caller, ticket_id))


@work_orders.post(
    "/{ticket_id}/waiting-for-parts", summary="The work order waits for a part (pending reason)"
)
async def wait_for_parts(ticket_id: Key, body: PartsWanted, caller: Staff, visits: Visits) -> WorkOrderRead:
    return _work_order(await visits.wait_for_parts(caller, ticket_id, body.part_id, body.quantity))


# ---------------------------------------------------------------- appointments


class Window(BaseModel):
    window_start: AwareDatetime
    window_end: AwareDatetime


class AppointmentCreate(Window):
    ticket_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")


class Coordinates(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class CheckIn(BaseModel):
    location: Coordinates | None = None


class CheckOut(CheckIn):
    work_done: Text = Field(min_length=1)


class NoShow(BaseModel):
    absent: Literal["customer", "technician"]


class AppointmentRead(BaseModel):
    id: str
    ticket_id: str
    technician_id: str
    window_start: datetime
    window_end: datetime
    status: AppointmentStatus
    booked_by: str
    reschedules: int
    departed_at: datetime | None = None
    checked_in_at: datetime | None = None
    checked_out_at: datetime | None = None
    travel_s: int | None = None
    work_s: int | None = None
    work_done: str | None = None
    no_show: str | None = None
    calendar_checked: bool = Field(
        description="the window was checked against the grid's business calendar (and the technician's "
        "shift, if any); false: fieldwork had no copy of the calendar yet and accepted it unchecked"
    )


def _appointment(a: Appointment) -> AppointmentRead:
    return AppointmentRead(
        id=a.id,
        ticket_id=a.ticket_id,
        technician_id=a.technician_id,
        window_start=a.window_start,
        window_end=a.window_end,
        status=a.status,
        booked_by=a.booked_by.value,
        reschedules=a.reschedules,
        departed_at=a.departed_at,
        checked_in_at=a.checked_in_at,
        checked_out_at=a.checked_out_at,
        travel_s=a.travel_s,
        work_s=a.work_s,
        work_done=a.work_done,
        no_show=a.no_show,
        calendar_checked=a.calendar_checked,
    )


def _point(body: CheckIn | None) -> Point | None:
    if body is None or body.location is None:
        return None
    return Point(body.location.lat, body.location.lon)


def _now() -> datetime:
    return datetime.now(UTC)


appointments = APIRouter(prefix="/v1/appointments", tags=["appointments"])


@appointments.post(
    "",
    status_code=201,
    summary="Book a visit of the work order's technician in a time window",
    description="The window must lie inside the grid's business calendar and, when the technician has a "
    "weekly shift, inside it (422 naming `window_start` or `window_end` otherwise). Until fieldwork has "
    "a copy of the grid's calendar (routing's `grid-configured`) the window is accepted unchecked and "
    "`calendar_checked` is false.",
)
async def book(body: AppointmentCreate, caller: AnyCaller, visits: Visits) -> AppointmentRead:
    window = (body.window_start, body.window_end)
    return _appointment(await visits.book(caller, body.ticket_id, window))


@appointments.get("/{appointment_id}", summary="An appointment")
async def get_appointment(appointment_id: Key, caller: AnyCaller, visits: Visits) -> AppointmentRead:
    found, _ = await visits.appointment(caller, appointment_id)
    return _appointment(found)


@appointments.post(
    "/{appointment_id}/reschedule",
    summary="Move a visit not started yet to another window (inside the grid's business hours and the "
    "technician's shift)",
)
async def reschedule(appointment_id: Key, body: Window, caller: AnyCaller, visits: Visits) -> AppointmentRead:
    window = (body.window_start, body.window_end)
    chosen_by: Literal["customer", "desk"] = "customer" if caller.is_channel_only else "desk"
    return _appointment(await visits.reschedule(caller, appointment_id, window, chosen_by))


@appointments.post("/{appointment_id}/cancel", summary="Call off a visit not started yet")
async def cancel(appointment_id: Key, caller: AnyCaller, visits: Visits) -> AppointmentRead:
    return _appointment(
        await visits.change_appointment(
            caller, appointment_id, lambda a, _: domain.cancel(a, "requested", _now())
        )
    )


@appointments.post(
    "/{appointment_id}/no-show", summary="Record that the customer or the technician was absent"
)
async def no_show(appointment_id: Key, body: NoShow, caller: Staff, visits: Visits) -> AppointmentRead:
    return _appointment(
        await visits.change_appointment(
            caller, appointment_id, lambda a, _: domain.record_no_show(a, body.absent, _now())
        )
    )


@appointments.post("/{appointment_id}/depart", summary="The technician sets off (travel time starts)")
async def depart(appointment_id: Key, caller: Staff, visits: Visits) -> AppointmentRead:
    return _appointment(
        await visits.change_appointment(
            caller, appointment_id, lambda a, _: domain.depart(a, _now()), on_site=True
        )
    )


@appointments.post("/{appointment_id}/check-in", summary="The technician arrives on site")
async def check_in(
    appointment_id: Key, caller: Staff, visits: Visits, body: CheckIn | None = None
) -> AppointmentRead:
    point = _point(body)
    return _appointment(
        await visits.change_appointment(
            caller, appointment_id, lambda a, order: domain.check_in(a, order, _now(), point), on_site=True
        )
    )


@appointments.post("/{appointment_id}/check-out", summary="The technician leaves, with the work done")
async def check_out(appointment_id: Key, body: CheckOut, caller: Staff, visits: Visits) -> AppointmentRead:
    point = _point(body)
    return _appointment(
        await visits.change_appointment(
            caller,
            appointment_id,
            lambda a, _: domain.check_out(a, _now(), point, body.work_done),
            on_site=True,
        )
    )


class DayRead(BaseModel):
    technician_id: str
    date: date
    timezone: str
    appointments: list[AppointmentRead]


technicians = APIRouter(prefix="/v1/technicians", tags=["appointments"])


@technicians.get("/{technician_id}/day", summary="A technician's route for a day: appointments by start")
async def technician_day(
    technician_id: Key,
    caller: Staff,
    visits: Visits,
    day: Annotated[date, Query(alias="date", ge=date(2000, 1, 1), le=date(2999, 12, 31))],
    timezone: Annotated[IanaZone, Query(max_length=64)] = "Asia/Shanghai",
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> DayRead:
    found = await visits.day(caller, technician_id, day, timezone, limit)
    return DayRead(
        technician_id=technician_id,
        date=day,
        timezone=timezone,
        appointments=[_appointment(a) for a in found],
    )
