"""A customer's erasure (PIPL) across the real services on real Kafka + the MongoDB-wire server: the
customer's data reaches intake, follow-up, feedback, notify and fieldwork; an administrator asks intake
to erase it; every service confirms; then no phone number, e-mail address or name of the customer is
left in any service's database, and none is on any topic."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
from harness import Platform, auth, mongo, produce, read_to_end, unique, wait_until

from aftersales.shared.contracts import Topic
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.settings import DEVELOPMENT_TOKENS
from aftersales.shared.testing import work_order_assigned, work_order_resolved

HOLDERS = ("intake", "followup", "feedback", "notify", "fieldwork")
TECH = "er-t1"
TOKENS = {**DEVELOPMENT_TOKENS, TECH: {"subject": TECH, "scopes": ["technician"]}}
WEB, ADMIN, DESK = auth("dev-web-token"), auth("dev-admin-token"), auth("dev-supervisor-token")


async def publish(platform: Platform, topic: Topic, event: CloudEvent) -> None:
    await produce(
        platform.infra, platform.topic(topic), event.value(), key=event.key, headers=event.headers()
    )


async def leftovers(platform: Platform, needles: list[str]) -> list[str]:
    """Return `<database>.<collection>/<_id>` of every document that contains one of `needles`."""
    client = mongo(platform.infra)
    found = []
    try:
        for service in HOLDERS:
            db = client[platform.database(service)]
            for name in await db.list_collection_names():
                async for doc in db[name].find({}):
                    if any(n in str(doc) for n in needles):
                        found.append(f"{service}.{name}/{doc['_id']}")
    finally:
        await client.close()
    return found


async def spread_customer_data(
    client: httpx.AsyncClient, platform: Platform, customer: dict[str, Any]
) -> str:
    """Open a ticket for the customer and let every service get its data; return the ticket id."""
    intake, notify, fw = (platform.url(s) for s in ("intake", "notify", "fieldwork"))
    body = {
        "channel": "web",
        "customer": customer,
        "product": {"device_type": "air_conditioner", "model": "KF-35"},
        "title": f"Broken, call {customer['phone']}",
        "description": f"Or mail {customer['email']}",
    }
    r = await client.post(f"{intake}/v1/tickets", json=body, headers=WEB)
    assert r.status_code == 201, r.text
    ticket_id, customer_id = r.json()["id"], r.json()["customer_id"]
    contact = {
        "channels": ["email", "sms"],
        "email": customer["email"],
        "phone": customer["phone"],
        "language": "en",
        "do_not_disturb": None,
    }
    r = await client.put(f"{notify}/v1/recipients/customers/{customer_id}", json=contact, headers=WEB)
    assert r.status_code == 201, r.text
    await publish(platform, Topic.ASSIGNMENTS, work_order_assigned(ticket_id, technician_id=TECH))

    async def held() -> bool:
        r = await client.get(f"{fw}/v1/work-orders/{ticket_id}", headers=ADMIN)
        return r.status_code == 200 and r.json().get("technician_id") == TECH

    await wait_until("fieldwork to learn the holder", held)
    report = {
        "ticket_id": ticket_id,
        "work_performed": "replaced the fan",
        "resolution_code": "replaced_part",
    }
    r = await client.post(f"{fw}/v1/reports", json=report, headers=auth(TECH))
    assert r.status_code == 201, r.text
    signature = {"signer_name": customer["name"], "strokes": [[[10, 20], [30, 45.5]]]}
    r = await client.post(f"{fw}/v1/reports/{r.json()['id']}/sign", json=signature, headers=auth(TECH))
    assert r.status_code == 200, r.text
    await publish(platform, Topic.ASSIGNMENTS, work_order_resolved(ticket_id, technician_id=TECH))
    for service, path in (("followup", "/v1/visits"), ("feedback", "/v1/surveys")):
        url = f"{platform.url(service)}{path}"

        async def planned(url: str = url) -> bool:
            r = await client.get(url, params={"ticket_id": ticket_id}, headers=DESK)
            return r.status_code == 200 and bool(r.json()["items"])

        await wait_until(f"{service} to act on the resolution", planned)
    return ticket_id


async def test_erasure_is_confirmed_by_every_service_and_leaves_no_contact_data(platform: Platform) -> None:
    await platform.start_ready(*HOLDERS, API_TOKENS=json.dumps(TOKENS))
    customer = {
        "name": f"韩梅梅{random.randint(1000, 9999)}",
        "phone": f"+86139{random.randint(10**7, 10**8 - 1)}",
        "email": f"{unique('han.')}@example.com",
        "region_code": "310000/310100/310104",
        "address": "Garden Road 12",
    }
    needles = [customer["phone"], customer["phone"].lstrip("+"), customer["email"], customer["name"]]
    async with httpx.AsyncClient(timeout=20) as client:
        ticket_id = await spread_customer_data(client, platform, customer)
        assert await leftovers(platform, needles), "the test must see the data before erasing it"
        intake = platform.url("intake")
        r = await client.get(f"{intake}/v1/tickets/{ticket_id}", headers=ADMIN)
        customer_id = r.json()["customer_id"]
        r = await client.post(f"{intake}/v1/customers/{customer_id}/erasure", headers=ADMIN)
        assert r.status_code == 202, r.text
        erasure = f"{intake}/v1/erasures/{r.json()['erasure_id']}"

        async def complete() -> dict[str, Any] | None:
            report: dict[str, Any] = (await client.get(erasure, headers=ADMIN)).json()
            return report if report["complete"] else None

        report = await wait_until("every service to confirm the erasure", complete, timeout_s=40)
        assert sorted(report["confirmed"]) == sorted(HOLDERS)
        assert report["confirmed"]["notify"] == {"recipients": 1, "inbound_mails": 0}
        assert report["confirmed"]["fieldwork"]["signatures"] == 1
        assert report["confirmed"]["intake"] == {"customers": 1, "tickets": 1}

    assert await leftovers(platform, needles) == []
    for topic in (
        t for t in Topic if t is not Topic.REQUESTS
    ):  # the gateways' command topic is intake's input
        records = await read_to_end(platform.infra, platform.topic(topic))
        assert not [r for r in records if any(n in (r.value or b"").decode() for n in needles)], topic
        if topic is Topic.PRIVACY:
            assert len(records) >= 1 + len(HOLDERS)
