"""The desk on the real stack (routing as a process, real Kafka + the MongoDB-wire server): dispatch by
hand over HTTP with its events on the topic, a reassign racing the technician's accept (one outcome, no
leaked slot), and technicians' own status, heartbeat and silent flag."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from harness import ALL, Platform, auth, wait_until
from test_routing_support import assignment_events, grid_body, produce_events, put_all, tech_body, ticket

from aftersales.shared.contracts import Topic

TOKENS = {
    "adm": {"subject": "admin", "scopes": ["admin"]},
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    "t1": {"subject": "t1", "scopes": ["technician"]},
    "t2": {"subject": "t2", "scopes": ["technician"]},
}
RACES = 6


async def held(client: httpx.AsyncClient, base: str) -> dict[str, tuple[int, int]]:
    """Return each technician's (active_work_orders, work orders he holds): equal when nothing leaked."""
    techs = (await client.get(f"{base}/v1/technicians", headers=auth("sup"))).json()
    out = {}
    for t in techs:
        params = {"technician_id": t["id"], "open_only": "true"}
        wos = (await client.get(f"{base}/v1/work-orders", params=params, headers=auth("sup"))).json()
        out[t["id"]] = (t["active_work_orders"], sum(w["status"] != "queued" for w in wos))
    return out


async def test_dispatch_by_hand_and_a_reassign_racing_an_accept(platform: Platform) -> None:
    routing = platform.start("routing", API_TOKENS=json.dumps(TOKENS))
    await routing.wait_ready(90)
    base, topic = routing.url, platform.topic(Topic.ASSIGNMENTS)
    async with httpx.AsyncClient(timeout=20) as client:
        await put_all(
            client,
            base,
            [grid_body("xuhui", "310104"), grid_body("huangpu", "310101")],
            [tech_body("t1", "xuhui", capacity=RACES + 1), tech_body("t2", "xuhui", capacity=RACES + 1)],
            token="adm",
        )
        ids = ["D-0", *(f"R-{n}" for n in range(RACES))]
        await produce_events(
            platform.infra, platform.topic(Topic.TICKETS), [ticket(i, "310104") for i in ids]
        )
        first = await assignment_events(platform.infra, topic, expect=len(ids), types=("assigned",))
        holder = {d["ticket_id"]: d["technician_id"] for _, d in first}

        # By hand: a named technician (checked), then a transfer to a grid nobody serves yet (queued).
        other = "t2" if holder["D-0"] == "t1" else "t1"
        body = {"technician_id": other, "reason": "closer to the site", "expected_status": "assigned"}
        r = await client.post(f"{base}/v1/work-orders/D-0/reassign", json=body, headers=auth("sup"))
        assert r.status_code == 200 and r.json()["technician_id"] == other, r.text
        r = await client.post(f"{base}/v1/work-orders/D-0/reassign", json=body, headers=auth(other))
        assert r.status_code == 403
        body = {"grid_id": "huangpu", "reason": "wrong district"}
        r = await client.post(f"{base}/v1/work-orders/D-0/reassign", json=body, headers=auth("sup"))
        assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["grid_id"] == "huangpu"
        events = await assignment_events(
            platform.infra, topic, expect=4, types=("reassigned", "dispatched-by-hand", "queued")
        )
        by_hand = [d for kind, d in events if kind == "dispatched-by-hand"]
        assert [d["kind"] for d in by_hand] == ["reassign", "transfer"], events
        assert by_hand[0]["supervisor_id"] == "sup-1" and by_hand[0]["to_technician_id"] == other
        assert [d["to_technician_id"] for kind, d in events if kind == "reassigned"] == [other]

        # The race: the supervisor reassigns what he saw assigned while its technician accepts it.
        async def race(ticket_id: str) -> tuple[int, int]:
            tech = holder[ticket_id]
            body = {
                "technician_id": "t2" if tech == "t1" else "t1",
                "reason": "rebalance",
                "expected_status": "assigned",
            }
            accept, move = await asyncio.gather(
                client.post(f"{base}/v1/work-orders/{ticket_id}/accept", headers=auth(tech)),
                client.post(f"{base}/v1/work-orders/{ticket_id}/reassign", json=body, headers=auth("sup")),
            )
            return accept.status_code, move.status_code

        outcomes = await asyncio.gather(*(race(f"R-{n}") for n in range(RACES)))
        for n, (accept, move) in enumerate(outcomes):
            wo = (await client.get(f"{base}/v1/work-orders/R-{n}", headers=auth("sup"))).json()
            if accept == 200:
                assert move == 409 and wo["status"] == "accepted", (n, accept, move, wo)
                assert wo["technician_id"] == holder[f"R-{n}"]
            else:
                assert accept in (403, 409) and move == 200, (n, accept, move, wo)
                assert wo["status"] == "assigned" and wo["technician_id"] != holder[f"R-{n}"]
        slots = await held(client, base)
        assert all(active == holding for active, holding in slots.values()), slots
        assert sum(active for active, _ in slots.values()) == RACES


async def test_technicians_set_their_status_and_a_silent_one_is_flagged(platform: Platform) -> None:
    routing = platform.start(
        "routing",
        API_TOKENS=json.dumps(TOKENS),
        TECHNICIAN_SILENT_AFTER_S="2",
        HOUSEKEEPING_INTERVAL_S="0.5",
    )
    await routing.wait_ready(90)
    base, topic = routing.url, platform.topic(Topic.ASSIGNMENTS)
    tickets = platform.topic(Topic.TICKETS)
    async with httpx.AsyncClient(timeout=20) as client:
        await put_all(
            client, base, [grid_body("xuhui", "310104")], [tech_body("t1", "xuhui", capacity=5)], "adm"
        )

        async def work_order(ticket_id: str) -> dict[str, Any] | None:
            r = await client.get(f"{base}/v1/work-orders/{ticket_id}", headers=auth("sup"))
            return r.json() if r.status_code == 200 else None

        # Busy: no new work; available again: the queue drains to him.
        r = await client.put(f"{base}/v1/technicians/me/status", json={"status": "busy"}, headers=auth("t1"))
        assert r.status_code == 200 and r.json()["status"] == "busy"
        await produce_events(platform.infra, tickets, [ticket("S-1", "310104")])
        queued = await wait_until("S-1 queued", lambda: work_order("S-1"))
        assert queued["status"] == "queued"
        r = await client.put(
            f"{base}/v1/technicians/me/status", json={"status": "available"}, headers=auth("t1")
        )
        assert r.status_code == 200
        assert (await work_order("S-1") or {}).get("technician_id") == "t1"

        # A first heartbeat, then silence past the limit: one flag naming what he holds; no new work.
        assert (
            await client.post(f"{base}/v1/technicians/me/heartbeat", headers=auth("t1"))
        ).status_code == 200
        [(_, silent)] = await assignment_events(platform.infra, topic, expect=1, types=("technician-silent",))
        assert silent["technician_id"] == "t1" and silent["held_ticket_ids"] == ["S-1"]
        assert silent["supervisor_id"] == "sup-1"
        await produce_events(platform.infra, tickets, [ticket("S-2", "310104")])
        assert (await wait_until("S-2 dispatched", lambda: work_order("S-2")))["status"] == "queued"

        r = await client.post(f"{base}/v1/technicians/me/heartbeat", headers=auth("t1"))
        assert r.status_code == 200 and r.json()["silent_since"] is None
        assert (await work_order("S-2") or {}).get("technician_id") == "t1"
        changes = await assignment_events(
            platform.infra, topic, expect=2, types=("technician-status-changed",), settle_s=1.0
        )
        assert [d["status"] for _, d in changes] == ["busy", "available"]
        flags = await assignment_events(platform.infra, topic, expect=ALL, types=("technician-silent",))
        first_spell = [d for _, d in flags if d["held_ticket_ids"] == ["S-1"]]
        assert len(first_spell) == 1, flags  # one per spell, though housekeeping passed many times
