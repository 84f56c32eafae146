"""On-site work on the resolution clock: waits for parts and customer-chosen visit windows, as rules (in
any arrival order, delivered twice) and through the service (fieldwork's events in, the work order out)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.routing.app import Settings, build
from aftersales.routing.field_holds import (
    FieldHolds,
    holds_fields,
    holds_of,
    parts_waiting,
    pending_reason,
    resolution_pauses,
    window_cancelled,
    window_chosen,
    work_resumed,
)
from aftersales.routing.sla import SlaPolicy, default_policy
from aftersales.routing.store import Guard
from aftersales.shared.contracts.fieldwork import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    VisitCheckedIn,
    WorkOrderWaitingForParts,
)
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import FAST, ServiceUnderTest, contract_event, in_process, ticket_created

T0 = datetime(2026, 11, 24, 9, tzinfo=UTC)
H = timedelta(hours=1)
BOTH = ["customer", "parts"]


def apply(holds: FieldHolds, *steps: Any) -> FieldHolds:
    """Apply steps ("wait"|"resume", at); a step that changes nothing leaves the holds as they were."""
    for kind, at in steps:
        after = parts_waiting(holds, at, "P-1") if kind == "wait" else work_resumed(holds, at)
        holds = holds if after is None else after
    return holds


# ------------------------------------------------------------------------------- rules


def test_a_wait_for_parts_pauses_until_the_next_resume_whatever_the_arrival_order() -> None:
    in_order = apply(FieldHolds(), ("wait", T0), ("resume", T0 + H))
    resume_first = apply(FieldHolds(), ("resume", T0 + H), ("wait", T0))
    assert resolution_pauses(in_order, BOTH) == [(T0, T0 + H)]
    assert resolution_pauses(resume_first, BOTH) == [(T0, T0 + H)]  # not left paused forever
    assert resolution_pauses(in_order, ["customer"]) == []  # parts are our time by default


def test_duplicates_and_stale_parts_events_change_nothing() -> None:
    holds = apply(FieldHolds(), ("wait", T0))
    assert parts_waiting(holds, T0, "P-1") is None
    assert parts_waiting(holds, T0 + H, "P-2") is None  # still the same wait
    assert resolution_pauses(holds, BOTH) == [(T0, None)]
    closed = apply(holds, ("resume", T0 + H))
    assert work_resumed(closed, T0 + H) is None
    assert parts_waiting(closed, T0, "P-1") is None  # the ended wait delivered again
    assert work_resumed(holds, T0 - H) is not None  # a resume from before the wait does not end it
    assert resolution_pauses(apply(holds, ("resume", T0 - H)), BOTH) == [(T0, None)]


def test_a_customer_window_after_the_due_time_is_customer_time_a_desk_one_is_not() -> None:
    due = T0 + 4 * H
    late = window_chosen(
        FieldHolds(),
        appointment_id="A1",
        at=T0,
        chosen_by="customer",
        window_start=T0 + 8 * H,
        due_without=due,
    )
    assert late is not None and resolution_pauses(late, ["customer"]) == [(T0, T0 + 8 * H)]
    assert pending_reason("accepted", late, T0 + H) == ("customer_window", T0 + 8 * H)
    early = window_chosen(
        FieldHolds(),
        appointment_id="A1",
        at=T0,
        chosen_by="customer",
        window_start=T0 + 2 * H,
        due_without=due,
    )
    desk = window_chosen(
        FieldHolds(), appointment_id="A1", at=T0, chosen_by="desk", window_start=T0 + 8 * H, due_without=due
    )
    assert early is not None and resolution_pauses(early, BOTH) == []
    assert desk is not None and resolution_pauses(desk, BOTH) == []


def test_a_desk_reschedule_or_a_cancellation_ends_the_customer_time_then() -> None:
    due = T0 + 4 * H
    late = window_chosen(
        FieldHolds(),
        appointment_id="A1",
        at=T0,
        chosen_by="customer",
        window_start=T0 + 8 * H,
        due_without=due,
    )
    assert late is not None
    moved = window_chosen(
        late, appointment_id="A1", at=T0 + H, chosen_by="desk", window_start=T0 + 9 * H, due_without=due
    )
    assert moved is not None and resolution_pauses(moved, ["customer"]) == [(T0, T0 + H)]
    kept = window_chosen(
        late, appointment_id="A1", at=T0 + H, chosen_by=None, window_start=T0 + 9 * H, due_without=due
    )
    assert kept is not None and resolution_pauses(kept, ["customer"]) == [(T0, T0 + 9 * H)]  # still theirs
    cancelled = window_cancelled(late, appointment_id="A1", at=T0 + 2 * H)
    assert cancelled is not None and resolution_pauses(cancelled, ["customer"]) == [(T0, T0 + 2 * H)]
    assert window_cancelled(cancelled, appointment_id="A1", at=T0 + 2 * H) is None
    assert (
        window_chosen(late, appointment_id="A1", at=T0, chosen_by="desk", window_start=T0, due_without=due)
        is None
    )


def test_a_cancellation_that_overtook_its_booking_wins() -> None:
    cancelled = window_cancelled(FieldHolds(), appointment_id="A1", at=T0 + H)
    assert cancelled is not None
    booked = window_chosen(
        cancelled, appointment_id="A1", at=T0, chosen_by="customer", window_start=T0 + 9 * H, due_without=T0
    )
    assert booked is None and resolution_pauses(cancelled, BOTH) == []


def test_holds_read_back_as_stored() -> None:
    holds = apply(FieldHolds(version=3), ("wait", T0), ("resume", T0 + H), ("wait", T0 + 2 * H))
    holds = (
        window_chosen(
            holds, appointment_id="A1", at=T0, chosen_by="customer", window_start=T0 + 9 * H, due_without=T0
        )
        or holds
    )
    assert holds_of(holds_fields(holds)) == holds
    assert holds_of(None) == FieldHolds()


def test_the_policy_pauses_on_customer_time_only_unless_told() -> None:
    assert default_policy().pause_on == ["customer"]
    with pytest.raises(ValueError, match="only once"):
        SlaPolicy(targets=default_policy().targets, pause_on=["parts", "parts"])  # type: ignore[list-item]


# ------------------------------------------------------------------------------- the service

ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
FIELDWORK = "/aftersales/fieldwork"


@pytest.fixture
async def routing() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        grid = {
            "id": "xuhui",
            "name": "Xuhui",
            "region_path": ["310000", "310100", "310104"],
            "calendar": {"timezone": "UTC", "weekly": ALWAYS},
            "supervisor_id": "supervisor-1",
        }
        assert (await svc.http.put("/v1/grids/xuhui", json=grid, headers=svc.auth())).status_code == 201
        tech = {"id": "t1", "name": "t1", "grid_id": "xuhui", "tier": 1, "capacity": 5}
        assert (await svc.http.put("/v1/technicians/t1", json=tech, headers=svc.auth())).status_code == 201
        yield svc


async def read(svc: ServiceUnderTest, ticket_id: str) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/work-orders/{ticket_id}", headers=svc.auth())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def started(svc: ServiceUnderTest, ticket_id: str, *, pause_on: list[str] | None = None) -> datetime:
    """Open an accepted work order (with `pause_on` in the policy, if given); return its resolution due."""
    if pause_on is not None:
        policy = {**default_policy().model_dump(mode="json"), "pause_on": pause_on}
        assert (await svc.http.put("/v1/sla-policies", json=policy, headers=svc.auth())).status_code == 200
    await svc.deliver(ticket_created(ticket_id))
    await svc.published.wait_for("aftersales.assignment.assigned.v1")
    r = await svc.http.post(f"/v1/work-orders/{ticket_id}/accept", headers=svc.auth())
    assert r.status_code == 200, r.text
    return datetime.fromisoformat((await read(svc, ticket_id))["resolution"]["due_at"])


def now_ms() -> datetime:
    """Return now to the millisecond, as the database keeps times."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def field_event(data: Any) -> CloudEvent:
    return contract_event(data, source=FIELDWORK)


def ids(ticket_id: str, at: datetime) -> dict[str, Any]:
    return {"appointment_id": "A1", "ticket_id": ticket_id, "technician_id": "t1", "occurred_at": at}


async def test_a_wait_for_parts_pauses_the_resolution_clock_when_the_policy_says_so(
    routing: ServiceUnderTest,
) -> None:
    due = await started(routing, "T1", pause_on=["customer", "parts"])
    at = now_ms()
    wait = field_event(
        WorkOrderWaitingForParts(
            ticket_id="T1", technician_id="t1", part_id="P-1", quantity=1, occurred_at=at
        )
    )
    await routing.deliver(wait, copies=2)

    wo = await read(routing, "T1")
    assert wo["pending_reason"] == "waiting_for_parts"
    assert wo["resolution"]["due_at"] is None and wo["resolution"]["paused_at"] is not None
    assert 0 < wo["resolution"]["remaining_s"] <= (due - at).total_seconds() + 1

    await routing.deliver(field_event(VisitCheckedIn(**ids("T1", at + 2 * H))))
    await routing.deliver(wait)  # late duplicate: the wait stays ended
    wo = await read(routing, "T1")
    assert wo["pending_reason"] is None and wo["resolution"]["paused_at"] is None
    assert datetime.fromisoformat(wo["resolution"]["due_at"]) == due + 2 * H
    assert routing.dead_letters == []


async def test_by_default_a_wait_for_parts_shows_but_does_not_pause(routing: ServiceUnderTest) -> None:
    due = await started(routing, "T2")
    at = now_ms()
    await routing.deliver(
        field_event(
            WorkOrderWaitingForParts(
                ticket_id="T2", technician_id="t1", part_id="P", quantity=1, occurred_at=at
            )
        )
    )
    wo = await read(routing, "T2")
    assert wo["pending_reason"] == "waiting_for_parts"
    assert datetime.fromisoformat(wo["resolution"]["due_at"]) == due


async def test_a_later_window_the_customer_chose_moves_the_due_time(routing: ServiceUnderTest) -> None:
    due = await started(routing, "T3")
    at = now_ms()
    start = due + 24 * H
    booked = AppointmentBooked(
        **ids("T3", at), window_start=start, window_end=start + 2 * H, booked_by="channel"
    )
    await routing.deliver(field_event(booked))
    wo = await read(routing, "T3")
    assert wo["pending_reason"] == "customer_window"
    assert datetime.fromisoformat(wo["pending_until"]) == start
    assert datetime.fromisoformat(wo["resolution"]["due_at"]) == due + (start - at)

    # The desk moves it: the customer time ends at the move.
    moved = AppointmentRescheduled(
        **ids("T3", at + H),
        window_start=start + H,
        window_end=start + 3 * H,
        previous_window_start=start,
        reschedules=1,
        chosen_by="desk",
    )
    await routing.deliver(field_event(moved))
    assert datetime.fromisoformat((await read(routing, "T3"))["resolution"]["due_at"]) == due + H
    await routing.deliver(field_event(AppointmentCancelled(**ids("T3", at + 2 * H), reason="requested")))
    assert datetime.fromisoformat((await read(routing, "T3"))["resolution"]["due_at"]) == due + H
    assert routing.dead_letters == []


async def test_a_check_in_that_overtook_its_wait_ends_it_when_the_wait_arrives(
    routing: ServiceUnderTest,
) -> None:
    due = await started(routing, "T4", pause_on=["parts"])
    at = now_ms()
    await routing.deliver(field_event(VisitCheckedIn(**ids("T4", at + H))))
    await routing.deliver(
        field_event(
            WorkOrderWaitingForParts(
                ticket_id="T4", technician_id="t1", part_id="P", quantity=2, occurred_at=at
            )
        )
    )
    wo = await read(routing, "T4")
    assert wo["pending_reason"] is None  # not paused forever
    assert datetime.fromisoformat(wo["resolution"]["due_at"]) == due + H


def test_the_holds_guard_matches_a_work_order_without_holds_yet() -> None:
    assert Guard(round=1, fieldwork_version=0).filter() == {
        "round": 1,
        "fieldwork.version": {"$in": [0, None]},
    }
    assert Guard(round=1, fieldwork_version=4).filter() == {"round": 1, "fieldwork.version": 4}
