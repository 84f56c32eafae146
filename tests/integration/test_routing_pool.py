"""The grab-order pool (抢单) and unrouted work orders on the real stack (routing as a process, real
Kafka + the MongoDB-wire server): two technicians claiming one offer at the same moment (one wins, one
gets 409, no leaked slot), a decline and the fallback to automatic dispatch on its durable timer, and
an unrouted ticket re-routed when a covering grid is put."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from harness import Platform, auth, wait_until
from test_routing_support import assignment_events, grid_body, produce_events, put_all, tech_body, ticket

from aftersales.shared.contracts import Topic

TOKENS = {
    "adm": {"subject": "admin", "scopes": ["admin"]},
    "sup": {"subject": "sup-1", "scopes": ["supervisor"]},
    **{t: {"subject": t, "scopes": ["technician"]} for t in ("t1", "t2", "h1", "h2")},
}
RACES = 4


def pooled(gid: str, district: str, fallback_after_s: float) -> dict[str, Any]:
    pool = {"categories": ["hardware_fault"], "priorities": [], "fallback_after_s": fallback_after_s}
    return {**grid_body(gid, district), "pool": pool}


async def test_claims_race_declines_fall_back_and_unrouted_work_is_rerouted(platform: Platform) -> None:
    routing = platform.start("routing", API_TOKENS=json.dumps(TOKENS))
    await routing.wait_ready(90)
    base, topic = routing.url, platform.topic(Topic.ASSIGNMENTS)
    async with httpx.AsyncClient(timeout=20) as client:

        async def work_order(ticket_id: str, status: str | None = None) -> dict[str, Any] | None:
            r = await client.get(f"{base}/v1/work-orders/{ticket_id}", headers=auth("sup"))
            found = r.json() if r.status_code == 200 else None
            return found if found and (status is None or found["status"] == status) else None

        await put_all(
            client,
            base,
            [pooled("xuhui", "310104", 600), pooled("huangpu", "310101", 4)],
            [tech_body(t, "xuhui", capacity=RACES) for t in ("t1", "t2")]
            + [tech_body(t, "huangpu", capacity=2) for t in ("h1", "h2")],
            token="adm",
        )
        ids = [f"C-{n}" for n in range(RACES)]
        await produce_events(
            platform.infra,
            platform.topic(Topic.TICKETS),
            [*(ticket(i, "310104") for i in ids), ticket("U-1", "310115")],
        )

        # Two technicians claim each offer at the same moment: exactly one 200, one 409.
        for ticket_id in ids:
            await wait_until(f"{ticket_id} offered", lambda t=ticket_id: work_order(t, "offered"))
        r = await client.get(f"{base}/v1/pool", headers=auth("t1"))
        assert sorted(w["ticket_id"] for w in r.json()) == ids, r.text
        outcomes = await asyncio.gather(
            *(
                client.post(f"{base}/v1/work-orders/{i}/claim", headers=auth(t))
                for i in ids
                for t in ("t1", "t2")
            )
        )
        codes = [r.status_code for r in outcomes]
        assert all(sorted(codes[n : n + 2]) == [200, 409] for n in range(0, len(codes), 2)), codes
        winners = [r.json()["technician_id"] for r in outcomes if r.status_code == 200]
        techs = {t["id"]: t for t in (await client.get(f"{base}/v1/technicians", headers=auth("sup"))).json()}
        for tech in ("t1", "t2"):
            held = (
                await client.get(
                    f"{base}/v1/work-orders",
                    params={"technician_id": tech, "open_only": "true"},
                    headers=auth("sup"),
                )
            ).json()
            assert techs[tech]["active_work_orders"] == len(held) == winners.count(tech), (tech, held)
        claimed = await assignment_events(platform.infra, topic, expect=RACES, types=("claimed",))
        assert sorted(d["ticket_id"] for _, d in claimed) == ids

        # A decline, then nobody claims: the durable fallback timer dispatches it automatically.
        await produce_events(platform.infra, platform.topic(Topic.TICKETS), [ticket("D-1", "310101")])
        await wait_until("D-1 offered", lambda: work_order("D-1", "offered"))
        r = await client.post(
            f"{base}/v1/work-orders/D-1/decline", json={"reason": "too far"}, headers=auth("h1")
        )
        assert r.status_code == 200 and r.json()["status"] == "offered", r.text
        assert (await client.get(f"{base}/v1/pool", headers=auth("h1"))).json() == []
        fell = await wait_until("D-1 fell back", lambda: work_order("D-1", "assigned"))
        assert fell["technician_id"] == "h2", fell  # who declined comes last
        [(_, declined)] = await assignment_events(platform.infra, topic, expect=1, types=("declined",))
        assert declined["technician_id"] == "h1" and declined["still_eligible"] == 1

        # A ticket of a region no grid covers: unrouted, then re-routed when a covering grid is put.
        await wait_until("U-1 unrouted", lambda: work_order("U-1", "queued"))
        assert (await work_order("U-1") or {})["grid_id"] == "unrouted"
        await put_all(
            client, base, [grid_body("pudong", "310115")], [tech_body("p1", "pudong", capacity=1)], "adm"
        )
        moved = await wait_until("U-1 re-routed and assigned", lambda: work_order("U-1", "assigned"))
        assert moved["grid_id"] == "pudong" and moved["technician_id"] == "p1", moved
        queued = await assignment_events(platform.infra, topic, expect=2, types=("queued",))
        assert [d["grid_id"] for _, d in queued if d["ticket_id"] == "U-1"] == ["unrouted", "pudong"], queued
