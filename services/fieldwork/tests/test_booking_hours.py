"""Fieldwork in-process: a visit is booked (or moved) only inside its grid's business calendar and its
technician's shift, as routing's configuration events last said; without a copy of the calendar it is
accepted unchecked (`calendar_checked: false`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from aftersales.fieldwork.app import Settings, build
from aftersales.shared.calendar import BusinessCalendar, WorkingWindow
from aftersales.shared.contracts.desk import GridConfigured, TechnicianConfigured
from aftersales.shared.testing import (
    FAST,
    ROUTING,
    ServiceUnderTest,
    contract_event,
    in_process,
    ticket_created,
    work_order_assigned,
)

TOKENS = {
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "web": {"subject": "web-portal", "scopes": ["channel"], "channel": "web"},
}
SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE = [WorkingWindow(start="09:00", end="12:00"), WorkingWindow(start="13:00", end="18:00")]


@pytest.fixture
async def svc() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**{**FAST, "api_tokens": json.dumps(TOKENS)})) as running:
        await running.deliver(ticket_created("T-1", submitted_by="http:web-portal"))
        await running.deliver(work_order_assigned("T-1", technician_id="t1", grid_id="xuhui"))
        yield running


def next_monday() -> date:
    """A Monday at least two days ahead (Shanghai time), so every window on it is in the future."""
    day = datetime.now(SHANGHAI).date() + timedelta(days=2)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def window(start: datetime, hours: float = 1) -> dict[str, str]:
    return {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=hours)).isoformat()}


async def configure_grid(svc: ServiceUnderTest, version: int = 1, **calendar: Any) -> None:
    cal = BusinessCalendar(timezone="Asia/Shanghai", weekly={d: OFFICE for d in range(5)}, **calendar)
    data = GridConfigured(grid_id="xuhui", calendar=cal, version=version, occurred_at=datetime.now(UTC))
    await svc.deliver(contract_event(data, source=ROUTING))


async def configure_technician(
    svc: ServiceUnderTest, shift: Any, version: int = 1, grid: str = "xuhui"
) -> None:
    data = TechnicianConfigured(
        technician_id="t1",
        grid_id=grid,
        occurred_at=datetime.now(UTC),
        shift=shift,
        on_duty=True,
        version=version,
    )
    await svc.deliver(contract_event(data, source=ROUTING))


async def book(svc: ServiceUnderTest, when: dict[str, str]) -> Any:
    return await svc.http.post(
        "/v1/appointments", json={"ticket_id": "T-1", **when}, headers={"Authorization": "Bearer web"}
    )


async def test_without_a_copy_of_the_calendar_a_window_is_accepted_unchecked(svc: ServiceUnderTest) -> None:
    r = await book(svc, window(at(next_monday(), 22)))
    assert r.status_code == 201, r.text
    assert r.json()["calendar_checked"] is False
    assert svc.dead_letters == []


async def test_a_window_outside_the_grids_business_hours_is_refused_naming_the_field(
    svc: ServiceUnderTest,
) -> None:
    await configure_grid(svc)
    monday = next_monday()
    cases = {
        "window_start": [at(monday, 8), at(monday, 12, 15), at(monday + timedelta(days=5), 10)],
        "window_end": [at(monday, 11, 30), at(monday, 17, 30)],  # into lunch, past closing
    }
    for field, starts in cases.items():
        for start in starts:
            r = await book(svc, window(start))
            assert r.status_code == 422, (start, r.text)
            assert r.json()["field"] == field and "business hours of grid xuhui" in r.json()["message"]
    r = await book(svc, window(at(monday, 9), hours=3))  # exactly the morning
    assert r.status_code == 201, r.text
    assert r.json()["calendar_checked"] is True


async def test_a_holiday_has_no_business_hours_and_a_newer_calendar_replaces_it(
    svc: ServiceUnderTest,
) -> None:
    monday = next_monday()
    await configure_grid(svc, version=2, holidays=[monday])
    r = await book(svc, window(at(monday, 10)))
    assert r.status_code == 422 and r.json()["field"] == "window_start"
    await configure_grid(svc, version=1)  # an older version arriving late changes nothing
    await configure_grid(svc, version=2, holidays=[monday])  # a redelivery neither
    assert (await book(svc, window(at(monday, 10)))).status_code == 422
    await configure_grid(svc, version=3)
    assert (await book(svc, window(at(monday, 10)))).status_code == 201


async def test_the_technicians_shift_narrows_the_business_hours(svc: ServiceUnderTest) -> None:
    await configure_grid(svc)
    await configure_technician(svc, {0: [WorkingWindow(start="09:00", end="11:00")]})
    monday = next_monday()
    r = await book(svc, window(at(monday, 10, 30)))
    assert r.status_code == 422 and r.json()["field"] == "window_end"
    assert "shift of technician t1" in r.json()["message"]
    r = await book(svc, window(at(monday, 14)))  # business hours, but not his shift
    assert r.status_code == 422 and r.json()["field"] == "window_start"
    assert (await book(svc, window(at(monday, 9, 30)))).status_code == 201
    await configure_technician(svc, None, version=2)  # no shift: the grid's hours alone
    assert (await book(svc, window(at(monday, 14)))).status_code == 201


async def test_a_reschedule_must_stay_inside_the_booking_hours(svc: ServiceUnderTest) -> None:
    await configure_grid(svc)
    monday = next_monday()
    r = await book(svc, window(at(monday, 9)))
    assert r.status_code == 201, r.text
    url = f"/v1/appointments/{r.json()['id']}/reschedule"
    sup = {"Authorization": "Bearer sup"}
    r = await svc.http.post(url, json=window(at(monday, 19)), headers=sup)
    assert r.status_code == 422 and r.json()["field"] == "window_start"
    r = await svc.http.post(url, json=window(at(monday, 15)), headers=sup)
    assert r.status_code == 200, r.text
    assert r.json()["reschedules"] == 1 and r.json()["calendar_checked"] is True
    await svc.published_exactly("aftersales.fieldwork.appointment-rescheduled.v1")  # the refusal had none
