"""Do-not-disturb edges and business-hours arithmetic in the customer's zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.followup.calendar import BusinessHours, DoNotDisturb, zone

SHANGHAI = ZoneInfo("Asia/Shanghai")
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
    at = local(SHANGHAI, *wall).astimezone(UTC)
    moved = DND.next_allowed(at, SHANGHAI)
    assert moved.tzinfo is UTC
    assert moved.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(*expected)  # type: ignore[misc]


def test_do_not_disturb_uses_the_customer_zone_not_utc() -> None:
    at = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai, 09:00 in New York
    assert DND.next_allowed(at, NEW_YORK) == at
    assert DND.next_allowed(at, SHANGHAI) == local(SHANGHAI, 2026, 11, 25, 9, 0).astimezone(UTC)


def test_do_not_disturb_across_daylight_saving_start_keeps_local_nine() -> None:
    # 2026-03-08 02:00 New York springs forward; 23:00 the evening before moves to 09:00 EDT.
    at = local(NEW_YORK, 2026, 3, 7, 23, 0).astimezone(UTC)
    moved = DND.next_allowed(at, NEW_YORK).astimezone(NEW_YORK)
    assert (moved.date().isoformat(), moved.hour, moved.utcoffset()) == ("2026-03-08", 9, timedelta(hours=-4))


def test_window_that_does_not_wrap_midnight() -> None:
    lunch = DoNotDisturb(time(12, 0), time(13, 30))
    assert lunch.contains(time(12, 0)) and lunch.contains(time(13, 29))
    assert not lunch.contains(time(13, 30)) and not lunch.contains(time(11, 59))
    at = local(SHANGHAI, 2026, 11, 24, 12, 15).astimezone(UTC)
    assert lunch.next_allowed(at, SHANGHAI) == local(SHANGHAI, 2026, 11, 24, 13, 30).astimezone(UTC)


def test_empty_window_never_moves_anything() -> None:
    never = DoNotDisturb(time(9, 0), time(9, 0))
    at = local(SHANGHAI, 2026, 11, 24, 3, 0).astimezone(UTC)
    assert never.next_allowed(at, SHANGHAI) == at


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)))
def test_next_allowed_is_never_earlier_never_inside_and_within_twelve_hours(at: datetime) -> None:
    moved = DND.next_allowed(at, SHANGHAI)
    assert at <= moved <= at + timedelta(hours=12)
    assert not DND.contains(moved.astimezone(SHANGHAI).time())


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
    result = BH.add(local(SHANGHAI, *start).astimezone(UTC), hours, SHANGHAI)
    assert result.astimezone(SHANGHAI).replace(tzinfo=None) == datetime(*expected)  # type: ignore[misc]


def test_business_hours_refuse_negative() -> None:
    with pytest.raises(ValueError, match="hours"):
        BH.add(datetime(2026, 11, 24, tzinfo=UTC), -1, SHANGHAI)
