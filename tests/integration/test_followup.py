"""Follow-up (回访) as a real process on real Kafka + FerretDB, driven by contract events and its HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from followup_events import (
    AROUND_THE_CLOCK,
    INTAKE,
    ROUTING,
    ZONE,
    created,
    resolve_a_standard_ticket,
    resolved,
    send,
)
from harness import Platform, auth, data_of, headers_of, read_topic, unique, wait_until

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, CustomerTier
from aftersales.shared.contracts.events import TicketCancelled, TicketReopened

# The follow-up desk (回访) works every technician's callbacks: a supervisor's token. A technician's token
# sees and acts on its own visits only (tests/security/test_bola.py).
DESK = auth("dev-supervisor-token")


async def visits(client: httpx.AsyncClient, url: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{url}/v1/visits", params=params, headers=DESK)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_resolution_callback_reopen_retry_cancel(platform: Platform) -> None:
    procs = await platform.start_ready(
        "followup", CALLBACK_DELAY_S="1", VISIT_MAX_ATTEMPTS="2", VISIT_RETRY_AFTER_S="1", **AROUND_THE_CLOCK
    )
    url = procs["followup"].url
    tz = ZONE
    ticket = unique("T-")
    await send(
        platform,
        Topic.TICKETS,
        created(ticket, tz, tier=CustomerTier.KEY_ACCOUNT, category=Category.HARDWARE_FAULT),
        ticket,
        INTAKE,
    )
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 1, Category.HARDWARE_FAULT), ticket, ROUTING)

    async with httpx.AsyncClient(timeout=10) as client:
        # A hardware fault of a key account: callback, on-site check by the technician, and a care visit.
        found = await wait_until(
            "three visits", lambda: _when(visits(client, url, ticket_id=ticket), lambda v: len(v) == 3)
        )
        kinds = {v["kind"]: v for v in found}
        assert set(kinds) == {"callback", "on_site", "care"}
        assert kinds["on_site"]["agent_id"] == "tech-42"
        assert kinds["care"]["due_at"] > (datetime.now(UTC) + timedelta(days=89)).isoformat()
        callback_id = kinds["callback"]["id"]

        # The durable timer makes the callback due; it shows on the grid's due list.
        due = await wait_until(
            "callback due on the grid's list",
            lambda: _when(
                visits(client, url, status="due", grid="grid-7"),
                lambda v: any(x["id"] == callback_id for x in v),
            ),
        )
        assert all(v["status"] == "due" for v in due)

        # Bad input names the field and changes nothing.
        bad = await client.post(
            f"{url}/v1/visits/{callback_id}/outcome", json={"outcome": "maybe"}, headers=DESK
        )
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "outcome"
        assert (
            await client.post(f"{url}/v1/visits/{callback_id}/outcome", json={"outcome": "not_resolved"})
        ).status_code == 401
        missing = await client.post(
            f"{url}/v1/visits/V-nope/outcome", json={"outcome": "not_resolved"}, headers=DESK
        )
        assert missing.status_code == 404

        done = await client.post(
            f"{url}/v1/visits/{callback_id}/outcome",
            json={"outcome": "not_resolved", "note": "still leaking", "agent": "agent-1"},
            headers=DESK,
        )
        assert done.status_code == 200, done.text
        assert (done.json()["status"], done.json()["outcome"]) == ("completed", "not_resolved")

        # A closed visit refuses another outcome and a reschedule: 409, nothing changed.
        again = await client.post(
            f"{url}/v1/visits/{callback_id}/outcome", json={"outcome": "confirmed_resolved"}, headers=DESK
        )
        assert again.status_code == 409
        later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        assert (
            await client.post(
                f"{url}/v1/visits/{callback_id}/reschedule", json={"due_at": later}, headers=DESK
            )
        ).status_code == 409
        after = (await client.get(f"{url}/v1/visits/{callback_id}", headers=DESK)).json()
        assert after["outcome"] == "not_resolved" and after["history"] == done.json()["history"]

    followups = platform.topic(Topic.FOLLOWUPS)
    [reopen] = await read_topic(
        platform.infra,
        followups,
        expect=1,
        where=lambda r: headers_of(r)["ce_type"].endswith("reopen-requested.v1"),
    )
    assert (
        data_of(reopen).items()
        >= {
            "ticket_id": ticket,
            "visit_id": callback_id,
            "round": 1,
            "technician_id": "tech-42",
        }.items()
    )
    assert reopen.key == ticket.encode() and headers_of(reopen)["ce_source"] == "/aftersales/followup"

    # Intake reopens: the open on-site check of round 1 is cancelled; the customer's care visit stays.
    reopened = created(ticket, tz, tier=CustomerTier.KEY_ACCOUNT, category=Category.HARDWARE_FAULT)
    await send(
        platform,
        Topic.TICKETS,
        TicketReopened(
            **reopened.model_dump(exclude={"created_at", "rules_version"}),
            reason="followup",
            reopen_count=1,
            previous_technician_id="tech-42",
            reopened_at=datetime.now(UTC),
        ),
        ticket,
        INTAKE,
    )
    await send(platform, Topic.ASSIGNMENTS, resolved(ticket, 2, Category.HARDWARE_FAULT), ticket, ROUTING)
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(
            "round-1 on-site cancelled, round-2 visits scheduled",
            lambda: _when(
                visits(client, url, ticket_id=ticket),
                lambda v: (
                    {(x["round"], x["kind"], x["status"]) for x in v}
                    >= {
                        (1, "on_site", "cancelled"),
                        (1, "care", "scheduled"),
                        (2, "callback", "due"),
                        (2, "on_site", "scheduled"),
                    }
                ),
            ),
        )
        assert len([v for v in await visits(client, url, ticket_id=ticket) if v["kind"] == "care"]) == 1

        # Unreachable: retried once (max 2 attempts), then missed.
        callback2 = f"V-{ticket}-r2-callback"
        first = await client.post(
            f"{url}/v1/visits/{callback2}/outcome", json={"outcome": "unreachable"}, headers=DESK
        )
        assert (first.json()["status"], first.json()["attempt"]) == ("scheduled", 2)
        await wait_until(
            "retry due",
            lambda: _when(
                client.get(f"{url}/v1/visits/{callback2}", headers=DESK),
                lambda r: r.json()["status"] == "due",
            ),
        )
        final = await client.post(
            f"{url}/v1/visits/{callback2}/outcome", json={"outcome": "unreachable"}, headers=DESK
        )
        assert final.json()["status"] == "missed"
        on_site2 = f"V-{ticket}-r2-on_site"

    # Cancelling the ticket cancels its open visits (VisitCancelled).
    await send(
        platform,
        Topic.TICKETS,
        TicketCancelled(ticket_id=ticket, reason="customer withdrew", cancelled_at=datetime.now(UTC)),
        ticket,
        INTAKE,
    )
    cancelled = await read_topic(
        platform.infra,
        followups,
        expect=2,
        where=lambda r: headers_of(r)["ce_type"].endswith("followup.cancelled.v1"),
    )
    assert {data_of(r)["visit_id"] for r in cancelled} == {f"V-{ticket}-r1-on_site", on_site2}
    missed = await read_topic(
        platform.infra, followups, expect=1, where=lambda r: headers_of(r)["ce_type"].endswith("missed.v1")
    )
    assert data_of(missed[0])["reason"] == "unreachable" and data_of(missed[0])["attempt"] == 2

    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{url}/metrics")).text
    assert 'aftersales_visit_outcomes_total{kind="callback",outcome="not_resolved"} 1.0' in metrics
    assert 'aftersales_visit_outcomes_total{kind="callback",outcome="unreachable"} 2.0' in metrics
    assert "aftersales_visits_due 0.0" in metrics


async def _when(value: Any, ok: Any) -> Any:
    result = await value
    return result if ok(result) else None


async def test_unanswered_callback_goes_missed_by_its_durable_timer(platform: Platform) -> None:
    procs = await platform.start_ready(
        "followup",
        CALLBACK_DELAY_S="0",
        CALLBACK_BUSINESS_HOURS='{"P2": 0.001}',  # a 3.6-second callback target
        VISIT_GRACE_S="1",
        **AROUND_THE_CLOCK,
    )
    url = procs["followup"].url
    ticket = await resolve_a_standard_ticket(platform)
    [missed] = await read_topic(
        platform.infra,
        platform.topic(Topic.FOLLOWUPS),
        expect=1,
        where=lambda r: headers_of(r)["ce_type"].endswith("followup.missed.v1"),
    )
    assert data_of(missed)["visit_id"] == f"V-{ticket}-r1-callback" and data_of(missed)["reason"] == "overdue"
    async with httpx.AsyncClient(timeout=10) as client:
        visit = (await client.get(f"{url}/v1/visits/{f'V-{ticket}-r1-callback'}", headers=DESK)).json()
        assert visit["status"] == "missed"
        assert [h["action"] for h in visit["history"]] == ["scheduled", "due", "missed"]
        late = await client.post(
            f"{url}/v1/visits/{visit['id']}/outcome", json={"outcome": "confirmed_resolved"}, headers=DESK
        )
        assert late.status_code == 409
        metrics = (await client.get(f"{url}/metrics")).text
    assert "aftersales_visits_overdue_total 1.0" in metrics


async def test_a_visit_rescheduled_into_the_customers_night_moves_to_the_next_morning(
    platform: Platform,
) -> None:
    # The do-not-disturb window stated here (it is also the default); the callback is hours away, so
    # nothing depends on the time the test runs.
    procs = await platform.start_ready(
        "followup", CALLBACK_DELAY_S="7200", DO_NOT_DISTURB_START="21:00", DO_NOT_DISTURB_END="09:00"
    )
    url = procs["followup"].url
    ticket = await resolve_a_standard_ticket(platform)
    callback = f"V-{ticket}-r1-callback"
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_until(
            "the callback scheduled",
            lambda: _when(
                client.get(f"{url}/v1/visits/{callback}", headers=DESK), lambda r: r.status_code == 200
            ),
        )
        zone = ZoneInfo(ZONE)
        night = (datetime.now(zone) + timedelta(days=1)).replace(hour=22, minute=30, second=0, microsecond=0)
        moved = await client.post(
            f"{url}/v1/visits/{callback}/reschedule",
            json={"due_at": night.isoformat(), "agent": "agent-9"},
            headers=DESK,
        )
        assert moved.status_code == 200, moved.text
        local = datetime.fromisoformat(moved.json()["due_at"]).astimezone(zone)
        assert (local.date(), local.hour, local.minute) == ((night + timedelta(days=1)).date(), 9, 0)
        assert [v["id"] for v in await visits(client, url, agent="agent-9")] == [callback]
        past = await client.post(
            f"{url}/v1/visits/{callback}/reschedule", json={"due_at": "2020-01-01T00:00:00Z"}, headers=DESK
        )
        assert past.status_code == 422 and past.json()["field"] == "due_at"
