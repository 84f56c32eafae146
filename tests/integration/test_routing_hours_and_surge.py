"""Routing as a real process: SLA clocks that run only in the grid's business hours (a grid that closed
half an hour ago), and surge mode switched on by the backlog and overridden by a supervisor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from harness import ALL, Platform, auth, data_of, read_topic
from test_routing import fast_policy
from test_routing_support import (
    assignment_events,
    event_type,
    grid_body,
    produce_events,
    put_all,
    tech_body,
    ticket,
)

from aftersales.shared.contracts import Topic

ZONE = "Asia/Shanghai"  # the calendar's own zone (no daylight saving: a day is 24 h)


def closed_calendar(now: datetime) -> tuple[dict[str, Any], datetime, datetime]:
    """Return a calendar open every day from 150 to 30 minutes before `now` (local, to the minute),
    with that window's opening and closing instants: the grid is closed now and opens again tomorrow."""
    local = now.astimezone(ZoneInfo(ZONE)).replace(second=0, microsecond=0)
    opens, closes = local - timedelta(minutes=150), local - timedelta(minutes=30)
    if opens.date() == closes.date() or closes.strftime("%H:%M") == "00:00":
        windows = [
            {"start": opens.strftime("%H:%M"), "end": closes.strftime("%H:%M").replace("00:00", "24:00")}
        ]
    else:  # the window spans local midnight: the evening part and the morning part of every day
        windows = [
            {"start": opens.strftime("%H:%M"), "end": "24:00"},
            {"start": "00:00", "end": closes.strftime("%H:%M")},
        ]
    calendar = {"timezone": ZONE, "weekly": {str(d): windows for d in range(7)}}
    return calendar, opens.astimezone(UTC), closes.astimezone(UTC)


def due(data: dict[str, Any], clock: str) -> datetime:
    return datetime.fromisoformat(data[f"{clock}_due"])


async def test_sla_clocks_stop_at_closing_time_and_resume_at_the_next_opening(platform: Platform) -> None:
    routing = (await platform.start_ready("routing"))["routing"]
    calendar, opens, closes = closed_calendar(datetime.now(UTC))
    reopens = opens + timedelta(days=1)
    first_response, resolution = timedelta(minutes=30), timedelta(minutes=60)
    async with httpx.AsyncClient(base_url=routing.url, timeout=20) as client:
        grid = {**grid_body("hours", "310104"), "calendar": calendar}
        await put_all(client, "", [grid], [tech_body("t1", "hours", capacity=5)])
        policy = fast_policy(first_response.total_seconds() / 60, resolution.total_seconds() / 60)
        assert (await client.put("/v1/sla-policies", json=policy, headers=auth())).status_code == 200
        # EVENING came in 10 minutes before closing; NIGHT comes in now, with the grid closed.
        evening = ticket("EVENING", "310104", created_at=closes - timedelta(minutes=10))
        night = ticket("NIGHT", "310104")
        await produce_events(platform.infra, platform.topic(Topic.TICKETS), [evening, night])
        assigned = await assignment_events(
            platform.infra, platform.topic(Topic.ASSIGNMENTS), expect=2, types=("assigned",)
        )
        by_ticket = {d["ticket_id"]: d for _, d in assigned}
        work_order = (await client.get("/v1/work-orders/EVENING", headers=auth())).json()

    # EVENING: 10 minutes counted before closing, the rest after the next opening: each clock moves by
    # exactly the closed hours.
    closed_for = reopens - closes
    assert closed_for == timedelta(hours=22)
    for clock, target in (("first_response", first_response), ("resolution", resolution)):
        expected = closes - timedelta(minutes=10) + target + closed_for
        assert due(by_ticket["EVENING"], clock) == expected, clock
        assert datetime.fromisoformat(work_order[clock]["due_at"]) == expected, clock
    assert due(by_ticket["EVENING"], "first_response") == reopens + timedelta(minutes=20)
    # NIGHT: nothing counts until the grid opens.
    assert due(by_ticket["NIGHT"], "first_response") == reopens + first_response
    assert due(by_ticket["NIGHT"], "resolution") == reopens + resolution


def surge_grid(automatic: bool = True) -> dict[str, Any]:
    surge = {"backlog_threshold": 2, "capacity_factor": 2.0, "automatic": automatic}
    return grid_body("busy", "310104", surge=surge)


async def first_event_of(platform: Platform, ticket_id: str) -> str:
    """Wait for the first assigned/queued event of a ticket; return its type."""
    [record] = await read_topic(
        platform.infra,
        platform.topic(Topic.ASSIGNMENTS),
        expect=1,
        where=lambda r: data_of(r).get("ticket_id") == ticket_id and event_type(r) in ("assigned", "queued"),
    )
    return event_type(record)


async def test_surge_switches_on_by_backlog_and_a_supervisor_override_holds(platform: Platform) -> None:
    routing = (await platform.start_ready("routing"))["routing"]
    tickets, topic = platform.topic(Topic.TICKETS), platform.topic(Topic.ASSIGNMENTS)
    async with httpx.AsyncClient(base_url=routing.url, timeout=20) as client:
        await put_all(client, "", [surge_grid()], [tech_body("t1", "busy", capacity=1)])

        async def one(ticket_id: str) -> str:  # one at a time: tickets land on any partition
            await produce_events(platform.infra, tickets, [ticket(ticket_id, "310104")])
            return await first_event_of(platform, ticket_id)

        # Capacity 1, threshold 2: S1 is assigned, S2-S4 queue; the third queued passes the threshold.
        assert [await one(t) for t in ("S1", "S2", "S3", "S4")] == ["assigned", "queued", "queued", "queued"]
        [(_, on)] = await assignment_events(platform.infra, topic, expect=1, types=("surge-on",))
        assert (on["grid_id"], on["trigger"], on["backlog"]) == ("busy", "backlog", 3)
        # In surge t1 takes twice his capacity: the queue's head is assigned at once.
        await read_topic(
            platform.infra,
            topic,
            expect=2,
            where=lambda r: event_type(r) == "assigned" and data_of(r)["ticket_id"] in ("S1", "S2"),
        )

        # The supervisor ends it; however long the queue grows, the backlog no longer switches it.
        r = await client.post(
            "/v1/grids/busy/surge", json={"on": False}, headers=auth("dev-supervisor-token")
        )
        assert r.status_code == 200 and r.json()["changed"] is True
        assert [await one(t) for t in ("S5", "S6", "S7")] == ["queued", "queued", "queued"]
        grid = (await client.get("/v1/grids/busy", headers=auth())).json()
        assert (grid["surge_on"], grid["surge_trigger"], grid["queue_length"]) == (False, "supervisor", 5)
    assert routing.stop() == 0  # every handler finished and the outbox flushed: the topic is final
    events = await assignment_events(platform.infra, topic, expect=ALL, types=("surge-on", "surge-off"))
    assert [(kind, d["trigger"]) for kind, d in events] == [
        ("surge-on", "backlog"),
        ("surge-off", "supervisor"),
    ]
