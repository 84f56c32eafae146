"""The one business calendar of the platform: working time in a calendar's own zone, minus pauses.

Routing counts SLA clocks in a grid's `BusinessCalendar` (weekly windows, holidays, extra working days);
followup counts its desk's `BusinessHours` in the customer's zone (the same engine over one daily window)
and keeps calls and visits out of the customer's `DoNotDisturb` hours.

An instant counts as working time when its local wall-clock time (in the calendar's zone) falls inside a
working window of its local date, that date is not a holiday (or is an extra working day), and the
instant is not inside a pause. All inputs and outputs are timezone-aware UTC datetimes. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aftersales.shared.zones import IanaZone

MINUTE = timedelta(minutes=1)
MAX_SCAN_DAYS = 3 * 366  # a calendar with no working time in three years is a configuration error


class WorkingWindow(BaseModel):
    """One working period of a day in local wall-clock time, e.g. 09:00-12:00; end may be 24:00."""

    model_config = ConfigDict(frozen=True)

    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["09:00"])
    end: str = Field(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$", examples=["12:00"])

    @property
    def start_minute(self) -> int:
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        return _minutes(self.end)

    @model_validator(mode="after")
    def _ordered(self) -> WorkingWindow:
        if self.end_minute <= self.start_minute:
            raise ValueError(f"window {self.start}-{self.end} must end after it starts")
        return self


class BusinessCalendar(BaseModel):
    """A grid's working time: IANA zone, weekly windows (0 = Monday), holidays and extra working days."""

    model_config = ConfigDict(frozen=True)

    timezone: IanaZone = Field(default="Asia/Shanghai", examples=["Asia/Shanghai"])
    weekly: dict[int, list[WorkingWindow]] = Field(
        description="weekday (0 = Monday ... 6 = Sunday) -> working windows of that day, breaks between"
    )
    holidays: list[date] = Field(default_factory=list, description="local dates without working time")
    extra_working_days: list[date] = Field(
        default_factory=list, description="local dates worked although their weekday is off (调休)"
    )
    extra_day_windows: list[WorkingWindow] | None = Field(
        default=None, description="windows of an extra working day; Monday's when not given"
    )

    @field_validator("weekly")
    @classmethod
    def _valid_week(cls, value: dict[int, list[WorkingWindow]]) -> dict[int, list[WorkingWindow]]:
        for day, windows in value.items():
            if not 0 <= day <= 6:
                raise ValueError(f"weekday {day} must be 0 (Monday) to 6 (Sunday)")
            ordered = sorted(windows, key=lambda w: w.start_minute)
            for before, after in pairwise(ordered):
                if after.start_minute < before.end_minute:
                    raise ValueError(
                        f"weekday {day}: windows {before.start}-{before.end} and "
                        f"{after.start}-{after.end} overlap"
                    )
        if not any(value.values()):
            raise ValueError("the calendar needs at least one working window")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def windows_on(self, day: date) -> list[WorkingWindow]:
        """Return the working windows of one local date."""
        if day in self.extra_working_days:
            extra = self.extra_day_windows
            return list(extra if extra is not None else self.weekly.get(0, []))
        if day in self.holidays:
            return []
        return list(self.weekly.get(day.weekday(), []))


def always_open(timezone: str = "UTC") -> BusinessCalendar:
    """Return a 24x7 calendar (used for grids that serve around the clock and for unrouted tickets)."""
    return BusinessCalendar(
        timezone=timezone, weekly={d: [WorkingWindow(start="00:00", end="24:00")] for d in range(7)}
    )


Pause = tuple[datetime, datetime | None]


def working_intervals(start: datetime, calendar: BusinessCalendar) -> Iterator[tuple[datetime, datetime]]:
    """Yield the calendar's working intervals in UTC, in order, clipped to begin no earlier than `start`."""
    zone = calendar.zone
    day = start.astimezone(zone).date() - timedelta(days=1)
    for _ in range(MAX_SCAN_DAYS):
        for lo, hi in _day_intervals(day, calendar, zone):
            if hi <= start:
                continue
            yield max(lo, start), hi
        day += timedelta(days=1)


def add_business_time(
    start: datetime, minutes: float, calendar: BusinessCalendar, pauses: Sequence[Pause] = ()
) -> datetime | None:
    """Return the instant `minutes` of business time after `start`, or None while an open pause stops it."""
    start = _utc(start)
    remaining = timedelta(minutes=minutes)
    if remaining <= timedelta(0):
        return start
    cuts = _normalise(pauses)
    for lo, hi in working_intervals(start, calendar):
        for a, b in _subtract(lo, hi, cuts):
            if b is None:
                return None
            if b - a >= remaining:
                return a + remaining
            remaining -= b - a
    raise ValueError("the calendar has no working time in the next three years")


def business_elapsed(
    start: datetime, end: datetime, calendar: BusinessCalendar, pauses: Sequence[Pause] = ()
) -> timedelta:
    """Return the business time between `start` and `end`, without the pauses."""
    start, end = _utc(start), _utc(end)
    total = timedelta(0)
    if end <= start:
        return total
    cuts = _normalise(pauses)
    for lo, hi in working_intervals(start, calendar):
        if lo >= end:
            break
        for a, b in _subtract(lo, min(hi, end), cuts):
            if b is None:
                return total  # an open pause stops the clock
            total += b - a
    return total


def _day_intervals(day: date, calendar: BusinessCalendar, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """Return the UTC intervals whose local time falls in a window of local date `day` (DST-exact)."""
    out: list[tuple[datetime, datetime]] = []
    midnight = datetime.combine(day, time(0))
    for window in sorted(calendar.windows_on(day), key=lambda w: w.start_minute):
        local_lo = midnight + timedelta(minutes=window.start_minute)
        local_hi = midnight + timedelta(minutes=window.end_minute)
        # Instants t with local(t) = t + offset(t) in [local_lo, local_hi): per constant-offset segment
        # of the zone, that is [local_lo - offset, local_hi - offset) intersected with the segment.
        span_lo = (local_lo - timedelta(hours=15)).replace(tzinfo=UTC)
        span_hi = (local_hi + timedelta(hours=15)).replace(tzinfo=UTC)
        for seg_lo, seg_hi, offset in _segments(span_lo, span_hi, zone):
            lo = max(seg_lo, (local_lo - offset).replace(tzinfo=UTC))
            hi = min(seg_hi, (local_hi - offset).replace(tzinfo=UTC))
            if lo < hi:
                out.append((lo, hi))
    out.sort()
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in out:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _segments(lo: datetime, hi: datetime, zone: ZoneInfo) -> list[tuple[datetime, datetime, timedelta]]:
    """Split [lo, hi) into pieces of constant UTC offset (transitions found to the minute)."""
    pieces: list[tuple[datetime, datetime, timedelta]] = []
    cursor = lo
    step = timedelta(hours=1)
    while cursor < hi:
        offset = _offset(cursor, zone)
        probe = cursor
        while probe < hi and _offset(min(probe + step, hi), zone) == offset:
            probe = min(probe + step, hi)
        if probe >= hi:
            pieces.append((cursor, hi, offset))
            break
        # The offset changes within (probe, probe + step]: bisect to the minute.
        a, b = probe, min(probe + step, hi)
        while b - a > MINUTE:
            mid = a + (b - a) // 2
            mid = mid.replace(second=0, microsecond=0)
            if mid <= a:
                mid = a + MINUTE
            if _offset(mid, zone) == offset:
                a = mid
            else:
                b = mid
        pieces.append((cursor, b, offset))
        cursor = b
    return pieces


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    return instant.astimezone(zone).utcoffset() or timedelta(0)


def _normalise(pauses: Sequence[Pause]) -> list[tuple[datetime, datetime | None]]:
    return sorted(((_utc(a), _utc(b) if b is not None else None) for a, b in pauses), key=lambda p: p[0])


def _subtract(
    lo: datetime, hi: datetime, cuts: Sequence[tuple[datetime, datetime | None]]
) -> Iterator[tuple[datetime, datetime | None]]:
    """Yield the parts of [lo, hi) outside the pauses; a part ending in an open pause has end None."""
    cursor = lo
    for a, b in cuts:
        if b is not None and b <= cursor:
            continue
        if a >= hi:
            break
        if a > cursor:
            yield cursor, a
        if b is None:
            yield max(a, cursor), None
            return
        cursor = max(cursor, b)
        if cursor >= hi:
            return
    if cursor < hi:
        yield cursor, hi


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return value.astimezone(UTC)


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# ------------------------------------------------------------------------------- customer-local time


def zone(name: str | None) -> tzinfo:
    """Return the zone of an IANA name; an unknown or empty name falls back to UTC."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


@dataclass(frozen=True, slots=True)
class DoNotDisturb:
    """Local hours in which nobody calls or visits a customer; `start` > `end` wraps midnight."""

    start: time = time(21, 0)
    end: time = time(9, 0)

    def contains(self, local: time) -> bool:
        """True when local wall-clock `local` is inside the window (start inclusive, end exclusive)."""
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, at: datetime, tz: tzinfo) -> datetime:
        """Return `at` itself when allowed, otherwise the end of the window it falls in (UTC)."""
        local = at.astimezone(tz)
        wall = local.time().replace(tzinfo=None)
        if not self.contains(wall):
            return at.astimezone(UTC)
        day = local.date()
        if self.start > self.end and wall >= self.start:
            day += timedelta(days=1)  # evening part of a window that wraps midnight: ends tomorrow morning
        return datetime.combine(day, self.end, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """One daily window on some weekdays (0 = Monday), counted in the customer's zone by the same engine
    as a grid's calendar (minute precision)."""

    opens: time = time(9, 0)
    closes: time = time(18, 0)
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})

    def calendar(self, tz: tzinfo) -> BusinessCalendar:
        """Return these hours as a business calendar in zone `tz`."""
        end = "24:00" if self.closes == time(0, 0) else self.closes.strftime("%H:%M")
        window = WorkingWindow(start=self.opens.strftime("%H:%M"), end=end)
        return BusinessCalendar(
            timezone=getattr(tz, "key", "UTC"), weekly={d: [window] for d in sorted(self.weekdays)}
        )

    def add(self, start: datetime, hours: float, tz: tzinfo) -> datetime:
        """Return the UTC instant `hours` business hours after `start`; counting begins at the first
        open instant at or after `start` (so 0 hours at night is the next opening)."""
        if hours < 0:
            raise ValueError("hours must be >= 0")
        calendar = self.calendar(tz)
        opening = next(working_intervals(_utc(start), calendar), None)
        if opening is None:
            raise ValueError("business calendar has no open hours")
        due = add_business_time(opening[0], hours * 60, calendar)
        assert due is not None  # no pauses: the clock never stops
        return due
