"""Booking hours (营业时间与班次): a visit is booked only inside its grid's business calendar and, when the
technician has a weekly shift, inside that shift too. Pure, no I/O.

Fieldwork keeps copies of both from routing's `grid-configured` and `technician-configured` events (the
highest version wins). Until the copy of a grid's calendar has arrived (a grid configured before this
rule existed, or an event still on its way) a window is accepted unchecked and the appointment says so
(`calendar_checked: false`): refusing every booking of a grid fieldwork has not heard of would stop the
desk for a reason the customer cannot act on, and the desk can see which visits were not checked.
`on_duty` is kept but not checked: it says whether the technician works now, not on the day booked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aftersales.shared.calendar import BusinessCalendar, WorkingWindow, working_intervals
from aftersales.shared.errors import InvalidRequest

Shift = Mapping[int, Sequence[WorkingWindow]]


@dataclass(frozen=True, slots=True)
class GridHours:
    """Fieldwork's copy of a grid's business calendar."""

    grid_id: str
    calendar: BusinessCalendar
    version: int


@dataclass(frozen=True, slots=True)
class TechnicianShift:
    """Fieldwork's copy of a technician's grid, weekly shift (None: any time) and duty."""

    technician_id: str
    grid_id: str
    shift: Shift | None
    on_duty: bool
    version: int


@dataclass(frozen=True, slots=True)
class BookingHours:
    """What a visit's window must lie in: its grid's calendar (None: no copy yet) and its technician's
    shift (None: no copy, or no shift), the shift counted in `shift_timezone` (his grid's zone)."""

    grid: GridHours | None = None
    shift: TechnicianShift | None = None
    shift_timezone: str | None = None

    def check(self, start: datetime, end: datetime) -> bool:
        """Refuse a window outside the grid's business hours or the technician's shift (422 naming
        `window_start` or `window_end`, with the reason); return whether the calendar was checked."""
        if self.grid is None:
            return False
        calendar = self.grid.calendar
        _require_inside(start, end, calendar, f"the business hours of grid {self.grid.grid_id}")
        if self.shift is not None and self.shift.shift is not None:
            zone = self.shift_timezone or calendar.timezone
            shift = BusinessCalendar.model_construct(
                timezone=zone, weekly={d: list(w) for d, w in self.shift.shift.items()}
            )
            _require_inside(start, end, shift, f"the shift of technician {self.shift.technician_id}")
        return True


UNKNOWN = BookingHours()  # no copy of the grid's calendar: windows are accepted unchecked


def _require_inside(start: datetime, end: datetime, calendar: BusinessCalendar, what: str) -> None:
    """Refuse [start, end) unless all of it is working time of `calendar` (holidays included)."""
    covered = start
    for lo, hi in working_intervals(start, calendar):
        if lo > covered:
            break  # a gap: the window leaves working time at `covered`
        covered = max(covered, hi)
        if covered >= end:
            return
    zone = calendar.zone
    if covered == start:
        local = start.astimezone(zone)
        raise InvalidRequest(
            f"window_start: {local:%Y-%m-%d %H:%M} ({calendar.timezone}) is outside {what}",
            field="window_start",
        )
    closing = covered.astimezone(zone)
    raise InvalidRequest(
        f"window_end: the window runs past {what}, which end at {closing:%Y-%m-%d %H:%M} "
        f"({calendar.timezone})",
        field="window_end",
    )
