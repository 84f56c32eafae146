"""Customer-local time rules: business hours and do-not-disturb (免打扰) windows, in the customer's zone.

Pure functions over timezone-aware datetimes; results are always UTC. Wall-clock arithmetic is done in
the customer's zone, so "09:00 local" stays 09:00 local across a daylight-saving change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


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
    """Working hours of the follow-up desk, in the customer's zone; weekdays 0=Monday."""

    opens: time = time(9, 0)
    closes: time = time(18, 0)
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})

    def add(self, start: datetime, hours: float, tz: tzinfo) -> datetime:
        """Return the UTC instant `hours` business hours after `start` (counting only open hours)."""
        if hours < 0:
            raise ValueError("hours must be >= 0")
        remaining = timedelta(hours=hours)
        local = start.astimezone(tz)
        for _ in range(3660):  # ten years of days: a calendar with no open day cannot loop forever
            day = local.date()
            opens = datetime.combine(day, self.opens, tzinfo=tz)
            closes = datetime.combine(day, self.closes, tzinfo=tz)
            if day.weekday() not in self.weekdays or local >= closes:
                local = datetime.combine(day + timedelta(days=1), self.opens, tzinfo=tz)
                continue
            local = max(local, opens)
            available = closes - local
            if remaining <= available:
                return (local + remaining).astimezone(UTC)
            remaining -= available
            local = datetime.combine(day + timedelta(days=1), self.opens, tzinfo=tz)
        raise ValueError("business calendar has no open hours")
