"""Which fired SLA timers still count: round, generation, threshold, pause and stop all matter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aftersales.routing.clocks import clock_running, pauses_of, timer_is_ahead, timer_is_current
from aftersales.shared.contracts.events import SlaClock

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def wo(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "round": 2,
        "status": "assigned",
        "pauses": [{"start": T0, "end": T0}],
        "paused_since": None,
        "sla": {
            "first_response": {"generation": 1, "fired": [50], "next_pct": 75, "stopped_at": None},
            "resolution": {"generation": 0, "fired": [], "next_pct": 50, "stopped_at": None},
        },
    }
    doc.update(changes)
    return doc


PAYLOAD = {"round": 2, "clock": "first_response", "pct": 75, "generation": 1}


def test_current_timer_counts() -> None:
    assert timer_is_current(wo(), PAYLOAD)


def test_stale_timers_do_nothing() -> None:
    assert not timer_is_current(None, PAYLOAD)
    assert not timer_is_current(wo(round=3), PAYLOAD)  # reopened since
    assert not timer_is_current(wo(), {**PAYLOAD, "generation": 0})  # re-planned since
    assert not timer_is_current(wo(), {**PAYLOAD, "pct": 50})  # already fired
    assert not timer_is_current(wo(status="pending_customer"), PAYLOAD)  # paused
    assert not timer_is_current(wo(status="resolved"), PAYLOAD)
    stopped = wo()
    stopped["sla"]["first_response"]["stopped_at"] = T0  # accepted: first response met
    assert not timer_is_current(stopped, PAYLOAD)
    assert not clock_running(stopped, SlaClock.FIRST_RESPONSE)
    assert clock_running(stopped, SlaClock.RESOLUTION)


def test_a_timer_armed_for_a_write_not_landed_yet_is_ahead_not_stale() -> None:
    assert timer_is_ahead(None, PAYLOAD)  # the work order's first write is still in flight
    assert timer_is_ahead(wo(round=1), PAYLOAD)  # the new round not written yet
    assert timer_is_ahead(wo(), {**PAYLOAD, "generation": 2})  # the re-plan not written yet
    assert timer_is_ahead(wo(), {**PAYLOAD, "pct": 100})  # the 75 % threshold's record not written yet
    assert not timer_is_ahead(wo(), PAYLOAD)  # current
    assert not timer_is_ahead(wo(round=3), PAYLOAD)  # reopened since: stale
    assert not timer_is_ahead(wo(), {**PAYLOAD, "generation": 0})  # re-planned since: stale
    assert not timer_is_ahead(wo(), {**PAYLOAD, "pct": 50})  # fired already: stale


def test_open_pause_is_part_of_the_pauses() -> None:
    assert pauses_of(wo(paused_since=T0)) == [(T0, T0), (T0, None)]
