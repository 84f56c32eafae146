"""`make up`'s demo books a visit in fieldwork, which refuses a window outside the grid's business hours:
the demo's window must be the first one inside them whatever the time of day `make up` runs (it failed
with 422 when run at 06:56 in Shanghai, booking "now")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from demo import VISIT_LENGTH, next_visit_window
from hypothesis import given, settings
from hypothesis import strategies as st
from routing_demo import demo_calendar

from aftersales.shared.calendar import BusinessCalendar, working_intervals

CALENDAR = BusinessCalendar.model_validate(demo_calendar())


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)))
def test_the_demo_visit_is_the_first_two_hours_inside_the_grids_business_hours(now: datetime) -> None:
    start, end = next_visit_window(now)
    assert now <= start and end - start == VISIT_LENGTH
    for lo, hi in working_intervals(now, CALENDAR):  # in order, from `now`
        if lo <= start:
            assert start == lo or hi - lo < VISIT_LENGTH, f"{lo}..{hi} had room for the visit earlier"
        if lo <= start < hi:
            assert end <= hi, f"{start}..{end} runs past the working interval {lo}..{hi}"
            break
        assert lo < start, f"{start} is not inside a working interval"
    else:
        raise AssertionError(f"{start} is not inside a working interval")


def test_at_night_in_shanghai_the_visit_is_the_next_working_morning() -> None:
    night = datetime(2026, 12, 1, 22, 56, tzinfo=UTC)  # Wednesday 06:56 in Shanghai
    assert next_visit_window(night) == (
        datetime(2026, 12, 2, 1, 0, tzinfo=UTC),  # 09:00 in Shanghai
        datetime(2026, 12, 2, 1, 0, tzinfo=UTC) + timedelta(hours=2),
    )
