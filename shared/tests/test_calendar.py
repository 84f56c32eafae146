"""The one business calendar: a grid's business-hours clock against a brute-force minute-by-minute
reference, and the customer-local rules of followup (do-not-disturb, the desk's business hours)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aftersales.shared.calendar import (
    BusinessCalendar,
    BusinessHours,
    DoNotDisturb,
    Pause,
    WorkingWindow,
    add_business_time,
    always_open,
    business_elapsed,
    zone,
)

MIN = timedelta(minutes=1)
ZONES = ["UTC", "Asia/Shanghai", "Asia/Kolkata", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]
SCAN_LIMIT_MIN = 8 * 24 * 60


def hhmm(minute: int) -> str:
    return "24:00" if minute == 1440 else f"{minute // 60:02d}:{minute % 60:02d}"


@st.composite
def calendars(draw: st.DrawFn) -> BusinessCalendar:
    weekly: dict[int, list[WorkingWindow]] = {}
    for day in range(7):
        cuts = sorted(draw(st.sets(st.integers(0, 96).map(lambda q: q * 15), max_size=4)))
        pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
        weekly[day] = [WorkingWindow(start=hhmm(a), end=hhmm(b)) for a, b in pairs if a < b]
    assume(any(weekly.values()))
    base = date(2026, 3, 1)
    days = st.integers(0, 260).map(lambda d: base + timedelta(days=d))
    return BusinessCalendar(
        timezone=draw(st.sampled_from(ZONES)),
        weekly=weekly,
        holidays=draw(st.lists(days, max_size=40)),
        extra_working_days=draw(st.lists(days, max_size=5)),
    )


starts = st.integers(0, 255 * 24 * 60).map(lambda m: datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=m))


@st.composite
def pause_lists(draw: st.DrawFn, start: datetime) -> list[Pause]:
    out: list[Pause] = []
    for _ in range(draw(st.integers(0, 3))):
        a = start + timedelta(minutes=draw(st.integers(-300, 4000)))
        out.append((a, a + timedelta(minutes=draw(st.integers(1, 900)))))
    if draw(st.booleans()) and draw(st.booleans()):
        out.append((start + timedelta(minutes=draw(st.integers(0, 6000))), None))
    return out


def working(t: datetime, cal: BusinessCalendar, pauses: list[Pause]) -> bool | None:
    """Reference: is minute [t, t+1) working? None when an open pause has stopped the clock."""
    for a, b in pauses:
        if b is None and t >= a:
            return None
        if b is not None and a <= t < b:
            return False
    local = t.astimezone(ZoneInfo(cal.timezone))
    minute = local.hour * 60 + local.minute
    return any(w.start_minute <= minute < w.end_minute for w in cal.windows_on(local.date()))


def reference_add(
    start: datetime, minutes: int, cal: BusinessCalendar, pauses: list[Pause]
) -> datetime | None:
    if minutes == 0:
        return start
    count = 0
    t = start
    for _ in range(SCAN_LIMIT_MIN):
        w = working(t, cal, pauses)
        if w is None:
            return None
        if w:
            count += 1
            if count == minutes:
                return t + MIN
        t += MIN
    raise OverflowError


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(cal=calendars(), start=starts, minutes=st.integers(0, 900), data=st.data())
def test_add_business_time_matches_minute_reference(
    cal: BusinessCalendar, start: datetime, minutes: int, data: st.DataObject
) -> None:
    pauses = data.draw(pause_lists(start))
    try:
        expected = reference_add(start, minutes, cal, pauses)
    except OverflowError:
        assume(False)
        return
    assert add_business_time(start, minutes, cal, pauses) == expected


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(cal=calendars(), start=starts, length=st.integers(0, 4 * 24 * 60), data=st.data())
def test_business_elapsed_matches_minute_reference(
    cal: BusinessCalendar, start: datetime, length: int, data: st.DataObject
) -> None:
    pauses = data.draw(pause_lists(start))
    end = start + timedelta(minutes=length)
    expected = 0
    t = start
    while t < end:
        w = working(t, cal, pauses)
        if w is None:
            break
        expected += bool(w)
        t += MIN
    assert business_elapsed(start, end, cal, pauses) == timedelta(minutes=expected)


SHANGHAI = BusinessCalendar(
    timezone="Asia/Shanghai",
    weekly={
        d: [WorkingWindow(start="09:00", end="12:00"), WorkingWindow(start="13:00", end="18:00")]
        for d in range(5)
    },
    holidays=[date(2026, 10, 1)],
    extra_working_days=[date(2026, 10, 10)],
)


def cst(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_lunch_break_and_evening_are_skipped() -> None:
    # 11:30 + 60 business minutes: 30 before lunch, 30 after -> 13:30
    assert add_business_time(cst(2026, 11, 24, 11, 30), 60, SHANGHAI) == cst(2026, 11, 24, 13, 30)
    # 17:30 + 60 -> next morning 09:30
    assert add_business_time(cst(2026, 11, 24, 17, 30), 60, SHANGHAI) == cst(2026, 11, 25, 9, 30)


def test_weekend_holiday_and_extra_working_day() -> None:
    # Friday 17:00 + 120 -> Monday 10:00
    assert add_business_time(cst(2026, 11, 27, 17, 0), 120, SHANGHAI) == cst(2026, 11, 30, 10, 0)
    # Wednesday 30 Sep 18:00 + 60: 1 Oct is a holiday -> Friday 2 Oct 10:00
    assert add_business_time(cst(2026, 9, 30, 18, 0), 60, SHANGHAI) == cst(2026, 10, 2, 10, 0)
    # Saturday 10 Oct is worked (调休) with Monday's hours
    assert add_business_time(cst(2026, 10, 9, 18, 0), 30, SHANGHAI) == cst(2026, 10, 10, 9, 30)


def test_pause_moves_the_due_time_and_open_pause_stops_it() -> None:
    start = cst(2026, 11, 24, 9, 0)
    pause = (cst(2026, 11, 24, 10, 0), cst(2026, 11, 24, 11, 0))
    assert add_business_time(start, 120, SHANGHAI, [pause]) == cst(2026, 11, 24, 12, 0)
    assert add_business_time(start, 150, SHANGHAI, [pause]) == cst(2026, 11, 24, 13, 30)
    assert add_business_time(start, 120, SHANGHAI, [(cst(2026, 11, 24, 10, 0), None)]) is None
    assert business_elapsed(start, cst(2026, 11, 24, 14, 0), SHANGHAI, [pause]) == timedelta(minutes=180)


def test_dst_day_in_new_york_counts_wall_clock_hours() -> None:
    ny = BusinessCalendar(
        timezone="America/New_York", weekly={6: [WorkingWindow(start="00:00", end="24:00")]}
    )
    start = datetime(2026, 3, 8, 0, 0, tzinfo=ZoneInfo("America/New_York"))  # the 23-hour Sunday
    assert business_elapsed(start, start + timedelta(days=2), ny) == timedelta(hours=23)


def test_always_open_is_plain_arithmetic() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert add_business_time(start, 90, always_open()) == start + timedelta(minutes=90)


# ------------------------------------------------------------------ followup: customer-local time
SHANGHAI_ZONE = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
DND = DoNotDisturb(time(21, 0), time(9, 0))


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        ((2026, 11, 24, 20, 59, 59), (2026, 11, 24, 20, 59, 59)),  # last allowed second
        ((2026, 11, 24, 21, 0, 0), (2026, 11, 25, 9, 0, 0)),  # window starts: next morning
        ((2026, 11, 24, 23, 30, 0), (2026, 11, 25, 9, 0, 0)),
        ((2026, 11, 25, 0, 0, 0), (2026, 11, 25, 9, 0, 0)),  # after midnight: same morning
        ((2026, 11, 25, 8, 59, 59), (2026, 11, 25, 9, 0, 0)),
        ((2026, 11, 25, 9, 0, 0), (2026, 11, 25, 9, 0, 0)),  # window end is allowed
        ((2026, 11, 25, 12, 0, 0), (2026, 11, 25, 12, 0, 0)),
        ((2026, 12, 31, 22, 0, 0), (2027, 1, 1, 9, 0, 0)),  # across a year end
    ],
)
def test_do_not_disturb_edges_in_customer_zone(wall: tuple[int, ...], expected: tuple[int, ...]) -> None:
    at = local(SHANGHAI_ZONE, *wall).astimezone(UTC)
    moved = DND.next_allowed(at, SHANGHAI_ZONE)
    assert moved.tzinfo is UTC
    assert moved.astimezone(SHANGHAI_ZONE).replace(tzinfo=None) == datetime(*expected)  # type: ignore[misc]


def test_do_not_disturb_uses_the_customer_zone_not_utc() -> None:
    at = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai, 09:00 in New York
    assert DND.next_allowed(at, NEW_YORK) == at
    assert DND.next_allowed(at, SHANGHAI_ZONE) == local(SHANGHAI_ZONE, 2026, 11, 25, 9, 0).astimezone(UTC)


def test_do_not_disturb_across_daylight_saving_start_keeps_local_nine() -> None:
    # 2026-03-08 02:00 New York springs forward; 23:00 the evening before moves to 09:00 EDT.
    at = local(NEW_YORK, 2026, 3, 7, 23, 0).astimezone(UTC)
    moved = DND.next_allowed(at, NEW_YORK).astimezone(NEW_YORK)
    assert (moved.date().isoformat(), moved.hour, moved.utcoffset()) == ("2026-03-08", 9, timedelta(hours=-4))


def test_window_that_does_not_wrap_midnight() -> None:
    lunch = DoNotDisturb(time(12, 0), time(13, 30))
    assert lunch.contains(time(12, 0)) and lunch.contains(time(13, 29))
    assert not lunch.contains(time(13, 30)) and not lunch.contains(time(11, 59))
    at = local(SHANGHAI_ZONE, 2026, 11, 24, 12, 15).astimezone(UTC)
    assert lunch.next_allowed(at, SHANGHAI_ZONE) == local(SHANGHAI_ZONE, 2026, 11, 24, 13, 30).astimezone(UTC)


def test_empty_window_never_moves_anything() -> None:
    never = DoNotDisturb(time(9, 0), time(9, 0))
    at = local(SHANGHAI_ZONE, 2026, 11, 24, 3, 0).astimezone(UTC)
    assert never.next_allowed(at, SHANGHAI_ZONE) == at


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
def test_next_allowed_is_never_earlier_never_inside_and_within_twelve_hours(at: datetime) -> None:
    moved = DND.next_allowed(at, SHANGHAI_ZONE)
    assert at <= moved <= at + timedelta(hours=12)
    assert not DND.contains(moved.astimezone(SHANGHAI_ZONE).time())


def test_unknown_zone_falls_back_to_utc() -> None:
    assert zone("Mars/Olympus_Mons") is UTC
    assert zone("") is UTC


BH = BusinessHours()


@pytest.mark.parametrize(
    ("start", "hours", "expected"),
    [
        ((2026, 11, 24, 10, 0), 4, (2026, 11, 24, 14, 0)),  # Tuesday, same day
        ((2026, 11, 24, 16, 0), 4, (2026, 11, 25, 11, 0)),  # spills into the next morning
        ((2026, 11, 24, 7, 0), 1, (2026, 11, 24, 10, 0)),  # before opening: counts from 09:00
        ((2026, 11, 24, 19, 0), 2, (2026, 11, 25, 11, 0)),  # after closing
        ((2026, 11, 27, 17, 0), 2, (2026, 11, 30, 10, 0)),  # Friday evening -> Monday
        ((2026, 11, 28, 12, 0), 9, (2026, 11, 30, 18, 0)),  # Saturday: a full Monday
        ((2026, 11, 24, 9, 0), 0, (2026, 11, 24, 9, 0)),
    ],
)
def test_business_hours(start: tuple[int, ...], hours: float, expected: tuple[int, ...]) -> None:
    result = BH.add(local(SHANGHAI_ZONE, *start).astimezone(UTC), hours, SHANGHAI_ZONE)
    assert result.astimezone(SHANGHAI_ZONE).replace(tzinfo=None) == datetime(*expected)  # type: ignore[misc]


def test_business_hours_refuse_negative() -> None:
    with pytest.raises(ValueError, match="hours"):
        BH.add(datetime(2026, 11, 24, tzinfo=UTC), -1, SHANGHAI_ZONE)
