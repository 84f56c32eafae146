"""`make up` demo, the service desk's side of routing (run by `deploy/local/demo.py`):

- a supervisor (`dev-supervisor-token`) reassigns a demo ticket by hand (改派) to another technician of its
  grid, with a reason; the demo prints the technician before and after and the `dispatched-by-hand` event
  as it reached the ticket's timeline in intake;
- the grab-order pool (抢单): `tech-demo` (`dev-technician-token`) says he is available, a new installation
  ticket in his grid (which pools installations, see `routing_demo.POOL`) is offered instead of
  dispatched, he sees it in `GET /v1/pool` and claims it.

Idempotent: a re-run finds the ticket reassigned (its work order's `via` is `desk`) and the pool ticket
claimed (the same Idempotency-Key gives the same ticket) and only shows them.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
from routing_demo import DEMO_TECHNICIAN, POOL, POOL_GRID

ADMIN = {"Authorization": "Bearer dev-admin-token"}
SUPERVISOR = {"Authorization": "Bearer dev-supervisor-token"}
TECHNICIAN = {"Authorization": "Bearer dev-technician-token"}  # subject tech-demo
HELD = ("assigned", "accepted", "in_progress")  # a technician holds the work order
DESK_VIA = "desk"  # routing's `via` of a work order dispatched by hand
REASON = "the customer asked for the technician who serviced this unit before"

POOL_TICKET: dict[str, Any] = {
    "key": "demo-web-pool-1",
    "token": "dev-web-token",
    "body": {
        "channel": "web",
        "customer": {
            "name": "Zhou Min",
            "email": "zhou.min@example.com",
            "region_code": "310000/310100/310101",  # Huangpu: the pooled grid
        },
        "product": {"device_type": "air_conditioner", "model": "AC-9000", "purchase_date": "2026-11-20"},
        "title": "Installation of a new air conditioner",
        "description": "The wall unit was delivered today; please install it.",
        "category_hint": "installation",
    },
}


def check(response: httpx.Response, what: str) -> Any:
    """Return the response's JSON body; stop the demo (exit 1) on an error status."""
    if response.status_code >= 400:
        print(f"[demo] {what} failed: {response.status_code} {response.text[:300]}")
        sys.exit(1)
    return response.json()


def work_order(
    client: httpx.Client, routing: str, ticket_id: str, wait_s: float = 0
) -> dict[str, Any] | None:
    """Read routing's work order of a ticket (waiting up to `wait_s` for it to exist); None if none."""
    deadline = time.monotonic() + wait_s
    while True:
        response = client.get(f"{routing}/v1/work-orders/{ticket_id}", headers=SUPERVISOR)
        if response.status_code == 200:
            found: dict[str, Any] = response.json()
            return found
        if response.status_code != 404 or time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


# ------------------------------------------------------------------------------- dispatch by hand (改派)


def reassign_by_hand(client: httpx.Client, urls: dict[str, str], tickets: list[dict[str, Any]]) -> None:
    """Reassign the first of `tickets` a technician holds to another technician of its grid, or, on a
    re-run, show the one reassigned before."""
    routing = urls["routing"]
    orders = [wo for t in tickets if (wo := work_order(client, routing, t["id"])) is not None]
    done = next((wo for wo in orders if wo.get("via") == DESK_VIA), None)
    if done is not None:
        print(
            f"[demo] supervisor desk (改派): {done['ticket_id']} was reassigned by hand before (a re-run); "
            f"now {done['status']}, held by {done['technician_id'] or '-'}"
        )
        show_desk_timeline(client, urls["intake"], done["ticket_id"])
        return
    for wo in orders:
        if wo["status"] in HELD and wo.get("technician_id"):
            after = reassign(client, routing, wo)
            if after is not None:
                print(
                    f"[demo] supervisor desk (改派): supervisor-1 reassigned {wo['ticket_id']} in "
                    f"{wo['grid_id']}: {wo['technician_id']} -> {after['technician_id']}"
                )
                print(f'         reason: "{REASON}"; work order {after["status"]}, via {after["via"]}')
                show_desk_timeline(client, urls["intake"], wo["ticket_id"])
                return
    print("[demo] supervisor desk: no demo ticket is held with a colleague free to take it; none reassigned")


def reassign(client: httpx.Client, routing: str, wo: dict[str, Any]) -> dict[str, Any] | None:
    """Reassign a held work order to the first colleague of its grid who passes routing's checks."""
    colleagues = check(
        client.get(f"{routing}/v1/technicians", params={"grid_id": wo["grid_id"]}, headers=SUPERVISOR),
        "technicians",
    )
    others = [t for t in colleagues if t["id"] != wo["technician_id"] and t["status"] == "available"]
    ranked = sorted(
        (t for t in others if t["on_duty"]),
        key=lambda t: (t["tier"], t["active_work_orders"] - t["capacity"], t["id"]),
    )
    for tech in ranked:
        body = {"technician_id": tech["id"], "reason": REASON, "expected_status": wo["status"]}
        response = client.post(
            f"{routing}/v1/work-orders/{wo['ticket_id']}/reassign", json=body, headers=SUPERVISOR
        )
        if response.status_code == 200:
            moved: dict[str, Any] = response.json()
            return moved
        if response.status_code == 422:
            continue  # he fails a check (skill, tier, capacity, availability): try the next colleague
        if response.status_code == 409:
            print(f"[demo] supervisor desk: {wo['ticket_id']} moved meanwhile ({response.text[:200]})")
            return None
        check(response, "reassign")
    return None


def show_desk_timeline(client: httpx.Client, intake: str, ticket_id: str) -> None:
    """Print the `dispatched-by-hand` event and its outcome as they reached the ticket in intake."""
    deadline = time.monotonic() + 20
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        ticket = check(client.get(f"{intake}/v1/tickets/{ticket_id}", headers=ADMIN), "read")
        entries = [
            e
            for e in ticket.get("timeline", [])
            if e["type"] in ("assignment.dispatched-by-hand", "assignment.reassigned")
        ]
        if any(e["type"] == "assignment.reassigned" for e in entries):
            break
        time.sleep(0.5)
    if not entries:
        print(f"[demo] intake: no dispatched-by-hand event on {ticket_id}'s timeline yet (see routing's log)")
        return
    for e in entries[-2:]:
        kind = f" ({e['kind']})" if e.get("kind") else ""
        print(
            f"         intake's timeline: {e['type']}{kind} "
            f"{e.get('from_technician_id') or '-'} -> {e.get('to_technician_id') or '-'} at {e['at']}"
        )


# ------------------------------------------------------------------------------- the pool (抢单)


def grab_from_pool(client: httpx.Client, urls: dict[str, str]) -> None:
    """tech-demo gets ready, a new installation ticket in his grid is offered, he sees it and claims it."""
    routing = urls["routing"]
    ready_demo_technician(client, routing)
    headers = {"Authorization": f"Bearer {POOL_TICKET['token']}", "Idempotency-Key": POOL_TICKET["key"]}
    sent = client.post(f"{urls['intake']}/v1/tickets", json=POOL_TICKET["body"], headers=headers)
    ticket = check(sent, "ticket")
    wo = work_order(client, routing, ticket["id"], wait_s=30)
    print(
        f"[demo] pool (抢单): grid {POOL_GRID} offers {', '.join(POOL['categories'])} to its technicians; "
        f"ticket {ticket['id']} ({ticket['category']}, {ticket['priority']}) arrived"
    )
    if wo is None:
        print(f"[demo] pool: routing has no work order for {ticket['id']} yet (see routing's log)")
        return
    offers = check(client.get(f"{routing}/v1/pool", headers=TECHNICIAN), "pool")
    listed = ", ".join(f"{o['ticket_id']} ({o['category']}, {o['priority']})" for o in offers)
    print(f"         GET /v1/pool as {DEMO_TECHNICIAN}: {listed or 'nothing on offer'}")
    if wo["status"] != "offered":
        how = "claimed from the pool before (a re-run)" if wo.get("via") == "pool" else "not on offer"
        print(
            f"         {ticket['id']} was {how}: {wo['status']}, via {wo.get('via') or '-'}, "
            f"held by {wo.get('technician_id') or '-'}"
        )
        return
    response = client.post(f"{routing}/v1/work-orders/{ticket['id']}/claim", headers=TECHNICIAN)
    if response.status_code == 409:
        print(f"         claim lost: {response.json().get('message', response.text[:200])}")
        return
    claimed = check(response, "claim")
    print(
        f"         POST /v1/work-orders/{ticket['id']}/claim -> {claimed['status']}, via {claimed['via']}, "
        f"held by {claimed['technician_id']} (the first claim wins; others get 409)"
    )


def ready_demo_technician(client: httpx.Client, routing: str) -> None:
    """tech-demo says he is available; if his mobile client ever sent heartbeats, he sends one now (after
    a first heartbeat, a silent client gets no new work)."""
    me = check(client.get(f"{routing}/v1/technicians/{DEMO_TECHNICIAN}", headers=TECHNICIAN), "technician")
    if me.get("last_heartbeat_at") or me.get("silent_since"):
        check(client.post(f"{routing}/v1/technicians/me/heartbeat", headers=TECHNICIAN), "heartbeat")
    after = check(
        client.put(f"{routing}/v1/technicians/me/status", json={"status": "available"}, headers=TECHNICIAN),
        "status",
    )
    print(
        f"[demo] {DEMO_TECHNICIAN} (dev-technician-token) is {after['status']} "
        f"(PUT /v1/technicians/me/status), holding {after['active_work_orders']} of {after['capacity']}"
    )
