"""Retention (PIPL) on the real servers: with the periods set to a few seconds, a customer's contact
data and ticket text at intake and an agent's note on a follow-up visit are pseudonymised by each
service's retention timers, while the ticket (id, status, category) and the visit (kind, outcome) stay
so KPIs keep counting. Nothing queries the history: each record is armed when it is written."""

from __future__ import annotations

import random
from typing import Any

import httpx
from followup_events import AROUND_THE_CLOCK
from harness import Platform, auth, mongo, produce, unique, wait_until

from aftersales.shared.contracts import Topic
from aftersales.shared.testing import work_order_resolved

SERVICES = ("intake", "followup")
PERIOD_DAYS = str(4 / 86400)  # four seconds
RETENTION = {
    "RETENTION_CUSTOMER_CONTACT_DAYS": PERIOD_DAYS,
    "RETENTION_TICKET_TEXT_DAYS": PERIOD_DAYS,
    "RETENTION_VISIT_NOTES_DAYS": PERIOD_DAYS,
}
WEB, ADMIN, DESK = auth("dev-web-token"), auth("dev-admin-token"), auth("dev-supervisor-token")


async def holding(platform: Platform, needles: list[str]) -> list[str]:
    """Return `<service>.<collection>/<_id>` of every intake or followup document holding a needle."""
    client = mongo(platform.infra)
    found = []
    try:
        for service in SERVICES:
            db = client[platform.database(service)]
            for name in await db.list_collection_names():
                async for doc in db[name].find({}):
                    if any(n in str(doc) for n in needles):
                        found.append(f"{service}.{name}/{doc['_id']}")
    finally:
        await client.close()
    return found


async def test_personal_data_past_its_period_is_pseudonymised_and_the_records_stay(
    platform: Platform,
) -> None:
    await platform.start_ready(*SERVICES, CALLBACK_DELAY_S="0", **RETENTION, **AROUND_THE_CLOCK)
    name = f"李雷{random.randint(1000, 9999)}"
    phone, email = f"+86138{random.randint(10**7, 10**8 - 1)}", f"{unique('li.')}@example.com"
    intake, followup = platform.url("intake"), platform.url("followup")
    async with httpx.AsyncClient(timeout=20) as client:
        body = {
            "channel": "web",
            "customer": {"name": name, "phone": phone, "email": email, "region_code": "310000"},
            "product": {"device_type": "air_conditioner", "model": "KF-35"},
            "title": f"Broken, call {phone}",
            "description": f"Or mail {email}",
        }
        r = await client.post(f"{intake}/v1/tickets", json=body, headers=WEB)
        assert r.status_code == 201, r.text
        ticket_id, customer_id = r.json()["id"], r.json()["customer_id"]
        r = await client.get(f"{intake}/v1/customers/{customer_id}", headers=ADMIN)
        assert phone in r.text, "the test must see the contact data before it goes"
        resolved = work_order_resolved(ticket_id)
        await produce(
            platform.infra,
            platform.topic(Topic.ASSIGNMENTS),
            resolved.value(),
            key=resolved.key,
            headers=resolved.headers(),
        )

        async def callback() -> dict[str, Any] | None:
            r = await client.get(f"{followup}/v1/visits", params={"ticket_id": ticket_id}, headers=DESK)
            found = [v for v in r.json()["items"] if v["kind"] == "callback"] if r.status_code == 200 else []
            return found[0] if found else None

        visit = await wait_until("followup to plan the callback", callback)
        note = {"outcome": "confirmed_resolved", "note": f"{name} says it works"}
        r = await client.post(f"{followup}/v1/visits/{visit['id']}/outcome", json=note, headers=DESK)
        assert r.status_code == 200, r.text
        r = await client.get(f"{followup}/v1/visits/{visit['id']}", headers=DESK)
        assert name in r.text, "the test must see the note before it goes"

        needles = [phone, phone.lstrip("+"), email, name]

        async def gone() -> bool:
            return not await holding(platform, needles)

        await wait_until("intake and followup to pseudonymise the data", gone, timeout_s=30, interval_s=1)

        r = await client.get(f"{intake}/v1/tickets/{ticket_id}", headers=ADMIN)
        assert r.status_code == 200, r.text
        ticket = r.json()
        assert ticket["customer_id"] == customer_id and ticket["status"] and ticket["category"]
        r = await client.get(f"{followup}/v1/visits/{visit['id']}", headers=DESK)
        assert r.status_code == 200 and r.json()["outcome"] == "confirmed_resolved", r.text
        for service in SERVICES:
            metrics = (await client.get(f"{platform.url(service)}/metrics")).text
            assert "aftersales_retention_pseudonymised_total{" in metrics, service
