"""Object-level authorization (OWASP API1) for every role and object type, and property-level rules
(API3), on all five services as real processes: channels, technicians and supervisors against tickets,
customers, visits and complaints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from harness import Platform, wait_until
from security_helpers import (
    OTHER_TECH,
    OTHER_WEB,
    PHONE,
    REGION_OF,
    SUPERVISOR,
    TECH,
    WEB,
    assigned_to,
    resolve,
    set_up_routing,
    submit,
    ticket_body,
)

from aftersales.intake import identity
from aftersales.shared.contracts.requests import CustomerIn

# Not yet run under the after-test checks (tests/conftest.py): opted out of both until it is.
pytestmark = [
    pytest.mark.expect_tracebacks("callers reaching for other callers' objects on a shared stack"),
    pytest.mark.expect_dlq("callers reaching for other callers' objects on a shared stack"),
]


async def test_a_channel_reaches_only_its_own_customers_and_tickets(stack: Platform) -> None:
    intake = stack.url("intake")
    async with httpx.AsyncClient(base_url=intake, timeout=10) as client:
        body = ticket_body()
        mine = await submit(client, stack, body, WEB)
        customer_id = mine["customer_id"]
        # The id is keyed: it is not the plain hash anyone could compute from the phone or e-mail.
        legacy = identity.legacy_customer_id(CustomerIn.model_validate(body["customer"]))
        assert customer_id.startswith("C-") and customer_id != legacy

        # Another channel names that customer by id: refused, nothing created or overwritten.
        forged = {
            **body,
            "customer": {
                "id": customer_id,
                "name": "Mallory",
                "tier": "key_account",
                "region_code": body["customer"]["region_code"],
            },
        }
        refused = await client.post("/v1/tickets", json=forged, headers=OTHER_WEB)
        assert refused.status_code == 403 and refused.json()["field"] == "customer.id"
        assert (await client.get(f"/v1/customers/{customer_id}", headers=OTHER_WEB)).status_code == 404
        assert (await client.get(f"/v1/tickets/{mine['id']}", headers=OTHER_WEB)).status_code == 404
        assert (await client.post(f"/v1/tickets/{mine['id']}/cancel", headers=OTHER_WEB)).status_code == 404
        listed = (await client.get("/v1/tickets", headers=OTHER_WEB)).json()["items"]
        assert mine["id"] not in {t["id"] for t in listed}

        # The channel that served the customer sees it, with contact data masked; staff see all of it.
        seen = (await client.get(f"/v1/customers/{customer_id}", headers=WEB)).json()
        assert seen["name"] == "Zhang Wei" and seen["phone"] != body["customer"]["phone"]
        assert body["customer"]["email"] not in str(seen) and body["customer"]["phone"][3:] not in str(seen)
        full = (await client.get(f"/v1/customers/{customer_id}", headers=SUPERVISOR)).json()
        assert (full["phone"], full["email"], full["name"]) == (
            body["customer"]["phone"],
            body["customer"]["email"],
            "Zhang Wei",
        )

        # Knowing the customer's e-mail (not just an id) links another channel, which sees only its tickets.
        by_mail = ticket_body(name="Zhang Wei", email=body["customer"]["email"])
        by_mail["channel"] = "phone"
        theirs = await submit(client, stack, by_mail, PHONE)
        assert theirs["customer_id"] == customer_id
        phone_view = (await client.get(f"/v1/customers/{customer_id}", headers=PHONE)).json()
        assert [t["id"] for t in phone_view["tickets"]] == [theirs["id"]]


async def test_channels_cannot_set_tier_priority_or_warranty(stack: Platform) -> None:
    async with httpx.AsyncClient(base_url=stack.url("intake"), timeout=10) as client:
        body = ticket_body()
        body["customer"]["tier"] = "key_account"
        body["priority_hint"] = "P1"
        body["product"] = {
            "device_type": "air_conditioner",
            "purchase_date": "2015-01-01",
            "warranty_months": 240,
        }
        body["title"], body["description"] = "How to set the timer", "how do i use the timer setting"
        receipt = await submit(client, stack, body, WEB)
        assert receipt["priority"] == "P4"  # a usage question, out of the standard warranty
        ticket = (await client.get(f"/v1/tickets/{receipt['id']}", headers=SUPERVISOR)).json()
        assert ticket["customer_tier"] == "standard" and ticket["under_warranty"] is False
        assert ticket["priority_hint"] == "P1" and "priority-hint" not in ticket["matched_rules"]

        # The platform's record makes the customer a key account; a request naming it by id alone
        # (with the request model's default tier) neither downgrades it nor loses the tier.
        customer_id = receipt["customer_id"]
        tier = await client.put(
            f"/v1/customers/{customer_id}/tier", json={"tier": "key_account"}, headers=WEB
        )
        assert tier.status_code == 403
        tier = await client.put(
            f"/v1/customers/{customer_id}/tier", json={"tier": "key_account"}, headers=SUPERVISOR
        )
        assert tier.status_code == 200 and tier.json()["tier"] == "key_account"
        by_id = {**ticket_body(), "customer": {"id": customer_id, "region_code": REGION_OF["tech-demo"]}}
        again = await submit(client, stack, by_id, WEB)
        ticket = (await client.get(f"/v1/tickets/{again['id']}", headers=SUPERVISOR)).json()
        assert ticket["customer_tier"] == "key_account"
        record = (await client.get(f"/v1/customers/{customer_id}", headers=SUPERVISOR)).json()
        assert record["tier"] == "key_account" and record["name"] == "Zhang Wei"

        # A supervisor's priority is applied.
        staff = await submit(
            client, stack, {**ticket_body(), "priority_hint": "P1", "channel": "phone"}, SUPERVISOR
        )
        assert staff["priority"] == "P1"


async def test_technicians_reach_only_their_own_work_and_channels_see_no_internals(stack: Platform) -> None:
    intake, followup = stack.url("intake"), stack.url("followup")
    async with httpx.AsyncClient(timeout=10) as client:
        await set_up_routing(client, stack)
        mine = await submit(client, stack, ticket_body(region=REGION_OF["tech-demo"]), WEB)
        theirs = await submit(client, stack, ticket_body(region=REGION_OF["tech-other"]), WEB)
        assert await assigned_to(client, stack, mine["id"]) == "tech-demo"
        assert await assigned_to(client, stack, theirs["id"]) == "tech-other"

        # Tickets and customers: a technician sees what it works on.
        assert (await client.get(f"{intake}/v1/tickets/{mine['id']}", headers=TECH)).status_code == 200
        assert (await client.get(f"{intake}/v1/tickets/{theirs['id']}", headers=TECH)).status_code == 404
        listed = (await client.get(f"{intake}/v1/tickets", headers=TECH)).json()["items"]
        assert {t["technician_id"] for t in listed} == {"tech-demo"}
        assert (
            await client.get(f"{intake}/v1/customers/{mine['customer_id']}", headers=TECH)
        ).status_code == 200
        assert (
            await client.get(f"{intake}/v1/customers/{theirs['customer_id']}", headers=TECH)
        ).status_code == 404

        await resolve(client, stack, mine["id"], TECH)
        await resolve(client, stack, theirs["id"], OTHER_TECH)

        async def visits_of(ticket_id: str) -> list[dict[str, Any]] | None:
            response = await client.get(
                f"{followup}/v1/visits", params={"ticket_id": ticket_id}, headers=SUPERVISOR
            )
            items = response.json()["items"]
            return items if len(items) >= 2 else None

        my_visits = {v["kind"]: v for v in await wait_until("visits", lambda: visits_of(mine["id"]), 40)}
        their_visits = {v["kind"]: v for v in await wait_until("visits", lambda: visits_of(theirs["id"]), 40)}
        on_site, callback = my_visits["on_site"], my_visits["callback"]
        assert on_site["agent_id"] == "tech-demo" and callback["agent_id"] is None

        # Visits: a technician lists and acts on its own; it reads its tickets' others, acts on none.
        listed = (await client.get(f"{followup}/v1/visits", headers=TECH)).json()["items"]
        assert {v["agent_id"] for v in listed} == {"tech-demo"}
        forbidden = await client.get(f"{followup}/v1/visits", params={"agent": "tech-other"}, headers=TECH)
        assert forbidden.status_code == 403 and forbidden.json()["field"] == "agent"
        assert (await client.get(f"{followup}/v1/visits/{callback['id']}", headers=TECH)).status_code == 200
        for visit in their_visits.values():
            assert (await client.get(f"{followup}/v1/visits/{visit['id']}", headers=TECH)).status_code == 404
            closing = await client.post(
                f"{followup}/v1/visits/{visit['id']}/outcome",
                json={"outcome": "confirmed_resolved"},
                headers=TECH,
            )
            assert closing.status_code == 404
        outcome = f"{followup}/v1/visits/{callback['id']}/outcome"
        assert (
            await client.post(outcome, json={"outcome": "confirmed_resolved"}, headers=TECH)
        ).status_code == 404
        later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        moved = await client.post(
            f"{followup}/v1/visits/{on_site['id']}/reschedule",
            json={"due_at": later, "agent": "tech-other"},
            headers=TECH,
        )
        assert moved.status_code == 403 and moved.json()["field"] == "agent"
        spoofed = await client.post(
            f"{followup}/v1/visits/{on_site['id']}/outcome",
            json={"outcome": "confirmed_resolved", "agent": "tech-other"},
            headers=TECH,
        )
        assert spoofed.status_code == 403 and spoofed.json()["field"] == "agent"
        done = await client.post(
            f"{followup}/v1/visits/{on_site['id']}/outcome",
            json={"outcome": "confirmed_resolved", "note": "fixed, call 13912345678"},
            headers=TECH,
        )
        assert done.status_code == 200, done.text
        last = done.json()["history"][-1]
        assert last["by"] == "tech-demo" and "13912345678" not in str(done.json())

        # What a channel sees of the ticket: no technician ids, levels, clocks or staff's reasons.
        ticket = (await client.get(f"{intake}/v1/tickets/{mine['id']}", headers=WEB)).json()
        assert ticket["technician_id"] is None and ticket["last_technician_id"] is None
        assert ticket["timeline"] and all(set(e) == {"at", "type", "source"} for e in ticket["timeline"])
        assert "tech-demo" not in str(ticket)


async def test_a_channel_complains_only_about_its_own_tickets_and_assigns_nobody(stack: Platform) -> None:
    feedback = stack.url("feedback")
    async with httpx.AsyncClient(timeout=10) as client:
        mine = await submit(client, stack, ticket_body(), WEB)
        complaint = {"ticket_id": mine["id"], "summary": "still broken"}

        async def opened() -> httpx.Response | None:
            response = await client.post(f"{feedback}/v1/complaints", json=complaint, headers=WEB)
            return response if response.status_code == 201 else None  # 404 until feedback knows the ticket

        first = await wait_until("the ticket known to feedback", opened, 30)
        assert first.json()["ticket_id"] == mine["id"]
        other = await client.post(f"{feedback}/v1/complaints", json=complaint, headers=OTHER_WEB)
        assert other.status_code == 404 and "product_model" not in other.text
        owned = await client.post(
            f"{feedback}/v1/complaints", json={**complaint, "owner_id": "x"}, headers=WEB
        )
        assert owned.status_code == 403 and owned.json()["field"] == "owner_id"
        assert (await client.get(f"{feedback}/v1/complaints", headers=WEB)).status_code == 403
        assert (
            await client.post(
                f"{feedback}/v1/complaints", json={**complaint, "owner_id": "sup-2"}, headers=SUPERVISOR
            )
        ).status_code == 201
