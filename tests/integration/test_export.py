"""A customer's data export (PIPL) across the real services on real Kafka + the MongoDB-wire server: the
customer's data reaches intake, follow-up, feedback, notify and fieldwork; an administrator asks intake for
an export; every service answers sealed to the export's public key; intake assembles the answers; and no
phone number, e-mail address or name of the customer is in plaintext on the privacy topic."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
from harness import Platform, read_to_end, unique, wait_until
from test_erasure import ADMIN, HOLDERS, TOKENS, spread_customer_data

from aftersales.shared.contracts import Topic

SEALED = b'"sealed":'  # only an export answer's value has it


async def test_export_is_assembled_from_every_service_and_sealed_on_the_topic(platform: Platform) -> None:
    await platform.start_ready(*HOLDERS, API_TOKENS=json.dumps(TOKENS))
    customer = {
        "name": f"李雷{random.randint(1000, 9999)}",
        "phone": f"+86138{random.randint(10**7, 10**8 - 1)}",
        "email": f"{unique('li.')}@example.com",
        "region_code": "310000/310100/310104",
        "address": "River Road 3",
    }
    needles = [customer["phone"], customer["phone"].lstrip("+"), customer["email"], customer["name"]]
    async with httpx.AsyncClient(timeout=20) as client:
        ticket_id = await spread_customer_data(client, platform, customer)
        intake = platform.url("intake")
        customer_id = (await client.get(f"{intake}/v1/tickets/{ticket_id}", headers=ADMIN)).json()[
            "customer_id"
        ]
        r = await client.post(f"{intake}/v1/customers/{customer_id}/exports", headers=ADMIN)
        assert r.status_code == 202, r.text
        url = f"{intake}/v1/customers/{customer_id}/exports/{r.json()['export_id']}"

        async def complete() -> dict[str, Any] | None:
            report: dict[str, Any] = (await client.get(url, headers=ADMIN)).json()
            return report if report["complete"] else None

        report = await wait_until("every service to answer the export", complete, timeout_s=40)

    assert sorted(report["answered"]) == sorted(HOLDERS)
    data = report["data"]
    assert customer["phone"] in json.dumps(data["intake"]["customer"])
    assert [t["_id"] for t in data["intake"]["tickets"]] == [ticket_id]
    assert {v["ticket_id"] for v in data["followup"]["visits"]} == {ticket_id}
    assert [s["ticket_id"] for s in data["feedback"]["surveys"]] == [ticket_id]
    assert data["notify"]["recipients"][0]["email"] == customer["email"]
    assert data["fieldwork"]["reports"][0]["signature"]["signer_name"] == customer["name"]

    records = await read_to_end(platform.infra, platform.topic(Topic.PRIVACY))
    answers = [r for r in records if SEALED in (r.value or b"")]
    assert len(answers) >= len(HOLDERS)
    assert not [r for r in records if any(n in (r.value or b"").decode() for n in needles)]
