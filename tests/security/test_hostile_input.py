"""Hostile input (OWASP API4, API8) against the five services as real processes: every input that once
answered 500 now gets a 4xx naming the field, oversized fields are refused, unknown filters are 422."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from harness import Platform, wait_until
from security_helpers import ADMIN, IOT, SUPERVISOR, TECH, WEB, resolve, set_up_routing, submit, ticket_body

# Not yet run under the after-test checks (tests/conftest.py): opted out of both until it is.
pytestmark = [
    pytest.mark.expect_tracebacks("hostile input: malformed, oversized and out-of-range fields"),
    pytest.mark.expect_dlq("hostile input: malformed, oversized and out-of-range fields"),
]

EXTREMES = ("0001-01-01T00:00+14:00", "9999-12-31T23:59:59-14:00")


def field_of(response: httpx.Response) -> str:
    body = response.json()
    return str(body.get("field") or body["errors"][0]["field"])


@pytest.mark.parametrize("observed_at", EXTREMES)
async def test_iot_times_at_the_ends_of_the_calendar(stack: Platform, observed_at: str) -> None:
    body = {
        **ticket_body(),
        "channel": "iot",
        "customer": {"id": "OWNER-X1", "region_code": "310000"},
        "product": {"device_type": "chiller", "serial": "X1"},
        "iot": {"fault_code": "E1", "severity": 3, "observed_at": observed_at},
    }
    async with httpx.AsyncClient(base_url=stack.url("intake"), timeout=10) as client:
        response = await client.post("/v1/tickets", json=body, headers=IOT)
    assert response.status_code == 422 and field_of(response) == "iot.observed_at"


async def test_list_filters_cursors_and_lengths(stack: Platform) -> None:
    async with httpx.AsyncClient(base_url=stack.url("intake"), timeout=10) as client:
        for name in ("created_from", "created_to"):
            for value in EXTREMES:
                response = await client.get("/v1/tickets", params={name: value}, headers=ADMIN)
                assert response.status_code == 422 and field_of(response) == name, (name, value)
        crafted = base64.urlsafe_b64encode(json.dumps([EXTREMES[0], "T-1"]).encode()).decode().rstrip("=")
        response = await client.get("/v1/tickets", params={"cursor": crafted}, headers=ADMIN)
        assert response.status_code == 422 and field_of(response) == "cursor"
        for query in ({"priority": "P9"}, {"q": "zzz"}):
            response = await client.get("/v1/tickets", params=query, headers=ADMIN)
            assert response.status_code == 422 and field_of(response) == next(iter(query))

        huge = ticket_body(region="310000/" * 5000 + "310000")
        response = await client.post("/v1/tickets", json=huge, headers=WEB)
        assert response.status_code == 422 and field_of(response) == "customer.region_code"
        long_phone = ticket_body(name="A", phone="+86" + "1" * 40)
        response = await client.post("/v1/tickets", json=long_phone, headers=WEB)
        assert response.status_code == 422 and field_of(response) == "customer.phone"


async def test_unknown_filters_on_every_service(stack: Platform) -> None:
    lists = {
        "routing": "/v1/work-orders",
        "followup": "/v1/visits",
        "feedback": "/v1/complaints",
        "metrics": "/v1/kpis",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        for service, path in lists.items():
            response = await client.get(f"{stack.url(service)}{path}", params={"q": "zzz"}, headers=ADMIN)
            assert response.status_code == 422 and field_of(response) == "q", service


@pytest.mark.parametrize("period", ["0000-01", "0001-01", "0001-W01", "9999-12", "2026-W48\n", "2026-13"])
async def test_inspection_periods_beyond_the_calendar(stack: Platform, period: str) -> None:
    metrics = stack.url("metrics")
    async with httpx.AsyncClient(timeout=10) as client:
        report = await client.get(
            f"{metrics}/v1/reports/inspections", params={"period": period}, headers=SUPERVISOR
        )
        assert report.status_code == 422 and field_of(report) == "period", report.text
        published = await client.post(
            f"{metrics}/v1/reports/inspections/{quote(period)}/publish", headers=SUPERVISOR
        )
        assert published.status_code == 422 and field_of(published) == "period", published.text
        for name in ("from", "to"):
            kpis = await client.get(f"{metrics}/v1/kpis", params={name: "0001-01-01"}, headers=SUPERVISOR)
            assert kpis.status_code == 422 and field_of(kpis) == name


async def test_a_visit_moved_to_the_end_of_time(stack: Platform) -> None:
    followup = stack.url("followup")
    async with httpx.AsyncClient(timeout=10) as client:
        await set_up_routing(client, stack)
        ticket = await submit(client, stack, ticket_body(), WEB)

        async def assigned() -> bool:
            response = await client.get(f"{stack.url('intake')}/v1/tickets/{ticket['id']}", headers=ADMIN)
            return bool(response.json()["status"] == "assigned")

        await wait_until("assigned", assigned, 40)
        await resolve(client, stack, ticket["id"], TECH)

        async def visit() -> str | None:
            response = await client.get(
                f"{followup}/v1/visits", params={"ticket_id": ticket["id"]}, headers=ADMIN
            )
            items = response.json()["items"]
            return items[0]["id"] if items else None

        visit_id = await wait_until("a visit", visit, 40)
        for due_at in ("9999-12-31T23:59:59-14:00", (datetime.now(UTC) + timedelta(days=400)).isoformat()):
            response = await client.post(
                f"{followup}/v1/visits/{visit_id}/reschedule", json={"due_at": due_at}, headers=SUPERVISOR
            )
            assert response.status_code == 422 and field_of(response) == "due_at", response.text
