"""Routing as a real process on real Kafka + the MongoDB-wire server: set-up and bad input over HTTP,
assignment, overflow, queue, technician actions, customer pause, hand-back, surge, escalation, the
grid-planning report, metrics, and an SLA breach timer that survives a restart and fires once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import ALL, Platform, auth, wait_until
from test_routing_support import (
    assignment_events,
    grid_body,
    produce_events,
    put_all,
    tech_body,
    ticket,
)

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import CustomerTier, Priority
from aftersales.shared.contracts.events import TicketUpdated
from aftersales.shared.envelope import new_event

pytestmark = pytest.mark.long_running(minutes=1.2)

TOKENS = {
    "adm": {"subject": "admin", "scopes": ["admin"]},
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "t1": {"subject": "t1", "scopes": ["technician"]},
    "t2": {"subject": "t2", "scopes": ["technician"]},
    "h1": {"subject": "h1", "scopes": ["technician"]},
}


def as_(token: str) -> dict[str, str]:
    return auth(token)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def work_order(client: httpx.AsyncClient, base: str, ticket_id: str) -> dict[str, Any]:
    r = await client.get(f"{base}/v1/work-orders/{ticket_id}", headers=as_("adm"))
    return r.json() if r.status_code == 200 else {}


async def test_routing_end_to_end_over_http_and_kafka(platform: Platform) -> None:
    routing = platform.start("routing", API_TOKENS=json.dumps(TOKENS))
    await routing.wait_ready(90)
    base = routing.url
    tickets_topic, topic = platform.topic(Topic.TICKETS), platform.topic(Topic.ASSIGNMENTS)
    async with httpx.AsyncClient(timeout=20) as client:
        # Bad input: named, refused, nothing written.
        r = await client.put(
            f"{base}/v1/technicians/x", json=tech_body("x", "nowhere", capacity=1), headers=as_("adm")
        )
        assert r.status_code == 422 and "nowhere" in r.json()["message"]
        r = await client.put(
            f"{base}/v1/grids/g", json=grid_body("g", "310109", neighbours=["ghost"]), headers=as_("adm")
        )
        assert r.status_code == 422 and "ghost" in r.json()["message"]
        assert (await client.get(f"{base}/v1/grids/g", headers=as_("adm"))).status_code == 404
        assert (await client.get(f"{base}/v1/technicians/x", headers=as_("adm"))).status_code == 404
        r = await client.put(f"{base}/v1/grids/g", json=grid_body("g", "310109"), headers=as_("t1"))
        assert r.status_code == 403
        r = await client.put(
            f"{base}/v1/technicians/x", json=tech_body("x", "g", capacity=-1), headers=as_("adm")
        )
        assert r.status_code == 422 and "capacity" in r.text

        await put_all(
            client,
            base,
            [grid_body("xuhui", "310104"), grid_body("huangpu", "310101", neighbours=["xuhui"])],
            [
                tech_body("t1", "xuhui", capacity=1),
                tech_body("t2", "xuhui", capacity=1, tier=2),
                tech_body("h1", "huangpu", capacity=1),
            ],
            token="adm",
        )
        grids = (await client.get(f"{base}/v1/grids", headers=as_("sup"))).json()
        assert {g["id"] for g in grids} == {"xuhui", "huangpu"}
        techs = (
            await client.get(f"{base}/v1/technicians", params={"grid_id": "xuhui"}, headers=as_("sup"))
        ).json()
        assert [t["id"] for t in techs] == ["t1", "t2"]

        # A: direct to t1; B: t1 full, tier 2 may not take P3 work -> overflow to huangpu; C: queued.
        for n, ticket_id in enumerate(("A", "B", "C"), start=1):  # one by one: they land on any partition
            await produce_events(platform.infra, tickets_topic, [ticket(ticket_id, "310104")])
            first = await assignment_events(platform.infra, topic, expect=n, types=("assigned", "queued"))
        by_ticket = {d["ticket_id"]: (kind, d) for kind, d in first}
        assert by_ticket["A"][0] == "assigned", by_ticket
        assert by_ticket["A"][1]["technician_id"] == "t1"
        assert by_ticket["A"][1]["via"] == "direct" and by_ticket["A"][1]["resolution_due"]
        assert by_ticket["B"][1]["technician_id"] == "h1" and by_ticket["B"][1]["via"] == "overflow"
        assert by_ticket["C"][0] == "queued" and by_ticket["C"][1]["grid_id"] == "xuhui"

        # Actions: only the assigned technician, only legal transitions; refusals change nothing.
        assert (await client.post(f"{base}/v1/work-orders/A/accept", headers=as_("t2"))).status_code == 403
        r = await client.post(
            f"{base}/v1/work-orders/A/resolve", json={"resolution_code": "x"}, headers=as_("t1")
        )
        assert r.status_code == 409 and "assigned" in r.json()["message"]
        assert (await work_order(client, base, "A"))["status"] == "assigned"
        assert (await client.post(f"{base}/v1/work-orders/nope/accept", headers=as_("t1"))).status_code == 404
        mine = (await client.get(f"{base}/v1/work-orders", headers=as_("t1"))).json()
        assert [w["ticket_id"] for w in mine] == ["A"]
        acted = {}
        for step in ("accept", "start", "pending-customer"):
            r = await client.post(f"{base}/v1/work-orders/A/{step}", headers=as_("t1"))
            assert r.status_code == 200, r.text
            acted[step] = r.json()
        paused = await work_order(client, base, "A")
        assert paused["status"] == "pending_customer" and paused["first_response"]["stopped_at"]
        # While paused the clock shows no due time (it no longer holds), only the business time left.
        assert paused["resolution"]["due_at"] is None and paused["resolution"]["remaining_s"] > 0

        # The customer answers (intake's event): the clock resumes and the due time moves by the pause.
        replied = new_event(
            TicketUpdated(ticket_id="A", change="customer_replied", updated_at=datetime.now(UTC)),
            source="/aftersales/intake",
            subject="A",
        )
        await produce_events(platform.infra, tickets_topic, [replied])

        async def resumed() -> dict[str, Any] | None:
            wo = await work_order(client, base, "A")
            return wo if wo.get("status") == "in_progress" else None

        after = await wait_until("A resumed by the customer's reply", resumed)
        # A 24x7 grid: the due time moves by exactly the pause, from the pending step to the resume
        # (`updated_at`), to the millisecond the database keeps.
        pause = at(after["updated_at"]) - at(paused["paused_since"])
        moved = at(after["resolution"]["due_at"]) - at(acted["start"]["resolution"]["due_at"])
        assert abs(moved - pause) <= timedelta(milliseconds=2), (moved, pause)
        r = await client.post(
            f"{base}/v1/work-orders/A/resolve", json={"resolution_code": "replaced_fan"}, headers=as_("t1")
        )
        assert r.status_code == 200 and r.json()["status"] == "resolved"

        # t1's slot freed: the queue drains (C -> t1 via queue).
        async def c_assigned() -> dict[str, Any] | None:
            wo = await work_order(client, base, "C")
            return wo if wo.get("technician_id") == "t1" else None

        assert (await wait_until("C assigned from the queue", c_assigned))["via"] == "queue"

        # h1 hands B back: nobody else can take it now -> queued; surge lets tier 2 take it.
        r = await client.post(
            f"{base}/v1/work-orders/B/hand-back", json={"reason": "no spare part"}, headers=as_("h1")
        )
        assert r.status_code == 200 and r.json()["status"] == "queued"
        r = await client.post(f"{base}/v1/grids/xuhui/surge", json={"on": True}, headers=as_("t1"))
        assert r.status_code == 403
        r = await client.post(f"{base}/v1/grids/xuhui/surge", json={"on": True}, headers=as_("sup"))
        assert r.status_code == 200 and r.json()["changed"] is True

        async def b_to_t2() -> dict[str, Any] | None:
            wo = await work_order(client, base, "B")
            return wo if wo.get("technician_id") == "t2" else None

        taken = await wait_until("B taken by tier 2 in surge", b_to_t2)
        assert (taken["via"], taken["tier"]) == ("queue", 2)
        r = await client.post(f"{base}/v1/grids/xuhui/surge", json={"on": False}, headers=as_("sup"))
        assert r.json()["changed"] is True

        # t1 escalates C; the only tier-2 technician is full -> the grid supervisor.
        r = await client.post(f"{base}/v1/work-orders/C/escalate", headers=as_("t1"))
        assert r.status_code == 200 and r.json()["escalation_level"] == "supervisor"

        report = (
            await client.get(
                f"{base}/v1/reports/grid-planning", params={"threshold": 0.5}, headers=as_("sup")
            )
        ).json()
        assert [f["grid_id"] for f in report] == ["xuhui"]
        assert report[0]["open_work_orders"] == 2 and report[0]["technicians_on_duty"] == 2
        metrics = (await client.get(f"{base}/metrics")).text
        assert "aftersales_assignment_latency_seconds_count" in metrics
        assert 'aftersales_escalations_total{level="supervisor",reason="technician"} 1.0' in metrics

    assert routing.stop() == 0  # graceful: the outbox is flushed, so the topic is now complete
    events = await assignment_events(platform.infra, topic, expect=ALL)
    set_up = sorted(kind for kind, _ in events if kind.endswith("-configured"))  # 2 grids, 3 technicians
    assert set_up == ["grid-configured"] * 2 + ["technician-configured"] * 3, set_up
    events = [(kind, d) for kind, d in events if not kind.endswith("-configured")]
    assert len(events) == 14, events
    a_kinds = [kind for kind, d in events if d.get("ticket_id") == "A"]
    assert a_kinds == ["assigned", "accepted", "started", "pending", "started", "resolved"]
    b_kinds = [kind for kind, d in events if d.get("ticket_id") == "B"]
    assert b_kinds == ["assigned", "queued", "assigned"]
    surge = [(kind, d["trigger"]) for kind, d in events if kind.startswith("surge")]
    assert surge == [("surge-on", "supervisor"), ("surge-off", "supervisor")]
    [escalated] = [d for kind, d in events if kind == "escalated"]
    assert escalated["level"] == "supervisor" and escalated["supervisor_id"] == "sup-1"
    resolved = [d for kind, d in events if kind == "resolved"]
    assert [(d["ticket_id"], d["resolution_code"]) for d in resolved] == [("A", "replaced_fan")]


def fast_policy(first_response_min: float, resolution_min: float) -> dict[str, Any]:
    return {
        "targets": [
            {
                "priority": p.value,
                "customer_tier": c.value,
                "first_response_minutes": first_response_min,
                "resolution_minutes": resolution_min,
            }
            for p in Priority
            for c in CustomerTier
        ]
    }


async def test_breach_timer_set_before_a_restart_fires_exactly_once_after_it(platform: Platform) -> None:
    routing = platform.start("routing")
    await routing.wait_ready(90)
    base, topic = routing.url, platform.topic(Topic.ASSIGNMENTS)
    async with httpx.AsyncClient(timeout=20) as client:
        await put_all(
            client, base, [grid_body("g", "310104", supervisor="sup-9")], [tech_body("t1", "g", capacity=3)]
        )
        # 30 s and 36 s: time enough to see the assignment and stop routing before either runs out.
        r = await client.put(f"{base}/v1/sla-policies", json=fast_policy(0.5, 0.6), headers=auth())
        assert r.status_code == 200 and r.json()["version"] == 1
        bad = fast_policy(1, 2)
        bad["targets"] = bad["targets"][1:]
        r = await client.put(f"{base}/v1/sla-policies", json=bad, headers=auth())
        assert r.status_code == 422 and "missing" in r.text
        await produce_events(platform.infra, platform.topic(Topic.TICKETS), [ticket("S1", "310104")])
        [(_, assigned)] = await assignment_events(platform.infra, topic, expect=1, types=("assigned",))
        due = datetime.fromisoformat(assigned["resolution_due"])
        first_due = datetime.fromisoformat(assigned["first_response_due"])
        assert first_due < due
    assert routing.stop() == 0  # a graceful shutdown on SIGTERM exits 0
    stopped_at = datetime.now(UTC)
    assert stopped_at < first_due, "the process must stop before the clocks run out"
    assert await assignment_events(platform.infra, topic, expect=ALL, types=("sla-breached",)) == []

    async def past_due() -> bool:
        return datetime.now(UTC) > due + timedelta(seconds=1)

    await wait_until("both SLA clocks past due while routing is down", past_due, timeout_s=60, interval_s=0.5)
    restarted = platform.start("routing", replica=1)
    await restarted.wait_ready(90)
    await assignment_events(platform.infra, topic, expect=2, types=("sla-breached",), timeout_s=40)
    await assignment_events(platform.infra, topic, expect=1, types=("escalated",), timeout_s=10)
    async with httpx.AsyncClient(timeout=20) as client:
        wo = (await client.get(f"{restarted.url}/v1/work-orders/S1", headers=auth())).json()
        assert wo["first_response"]["breached"] and wo["resolution"]["breached"]
        metrics = (await client.get(f"{restarted.url}/metrics")).text
        assert 'aftersales_sla_breaches_total{clock="resolution",grid="g"} 1.0' in metrics
    # Stopped again, the topic is final: every timer fired exactly once, the breaches after the restart.
    assert restarted.stop() == 0
    events = await assignment_events(platform.infra, topic, expect=ALL)
    breaches = [d for kind, d in events if kind == "sla-breached"]
    assert sorted(d["clock"] for d in breaches) == ["first_response", "resolution"]
    assert all(datetime.fromisoformat(d["occurred_at"]) > stopped_at for d in breaches)
    warnings = [d for kind, d in events if kind == "sla-warning"]
    assert sorted((d["clock"], d["threshold_pct"]) for d in warnings) == [
        ("first_response", 50),
        ("first_response", 75),
        ("resolution", 50),
        ("resolution", 75),
    ]
    escalations = [d for kind, d in events if kind == "escalated"]
    assert [(d["level"], d["reason"], d["supervisor_id"]) for d in escalations] == [
        ("supervisor", "sla_breach", "sup-9")
    ]
