"""Customers as records, in-process: staff create, edit (version-guarded) and list customers and their
products, every change on a bounded change log without contact data; a channel sees only the customers it
serves, and its requests fill a record's empty fields without overwriting any, nor the tier."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, ExecutionTimeout

from aftersales.intake.app import Settings, build
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

SUP, WEB, PHONE = "dev-supervisor-token", "dev-web-token", "dev-phone-token"


@pytest.fixture
async def intake() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def customer(svc: ServiceUnderTest, customer_id: str, token: str = SUP) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/customers/{customer_id}", headers=svc.auth(token))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def history(svc: ServiceUnderTest, customer_id: str, token: str = SUP, **params: Any) -> dict[str, Any]:
    r = await svc.http.get(f"/v1/customers/{customer_id}/history", params=params, headers=svc.auth(token))
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


async def test_staff_create_edit_and_read_the_change_log(intake: ServiceUnderTest) -> None:
    body = {
        "name": "Wang Fang",
        "phone": "+8613900139000",
        "region_code": "310000/310100",
        "tier": "gold",
        "products": [{"device_type": "washer", "model": "WM-8", "serial": "SN-1"}],
    }
    r = await intake.http.post("/v1/customers", json=body, headers=intake.auth(SUP))
    assert r.status_code == 201, r.text
    created = r.json()
    cid = created["id"]
    assert created["tier"] == "gold" and [p["serial"] for p in created["products"]] == ["SN-1"]
    r = await intake.http.post("/v1/customers", json=body, headers=intake.auth(SUP))
    assert r.status_code == 409
    r = await intake.http.post(
        "/v1/customers", json={"name": "X", "region_code": "310000"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 422 and r.json()["field"] == "phone"
    r = await intake.http.post("/v1/customers", json={**body, "phone": "12"}, headers=intake.auth(SUP))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "phone"

    version = created["version"]
    patch = {"address": "1 Nanjing Road", "tier": "key_account"}
    r = await intake.http.patch(f"/v1/customers/{cid}", json=patch, headers=intake.auth(WEB))
    assert r.status_code == 403
    r = await intake.http.patch(
        f"/v1/customers/{cid}", json=patch, headers={**intake.auth(SUP), "If-Match": f'"{version + 3}"'}
    )
    assert r.status_code == 409 and r.json()["field"] == "If-Match"
    r = await intake.http.patch(
        f"/v1/customers/{cid}", json=patch, headers={**intake.auth(SUP), "If-Match": f'"{version}"'}
    )
    assert r.status_code == 200, r.text
    assert r.json()["address"] == "1 Nanjing Road" and r.json()["tier"] == "key_account"
    r = await intake.http.post(
        f"/v1/customers/{cid}/products",
        json={"device_type": "dryer", "serial": "SN-2"},
        headers=intake.auth(SUP),
    )
    assert r.status_code == 201 and {p["serial"] for p in r.json()["products"]} == {"SN-1", "SN-2"}

    log = await history(intake, cid)
    assert [e["change"] for e in log["items"]] == ["product_added", "edited", "product_added", "created"]
    assert log["items"][1]["fields"] == ["address", "tier"] and log["items"][1]["by"] == "supervisor-1"
    assert "Nanjing" not in str(log) and "13900139000" not in str(log)
    first = await history(intake, cid, limit=2)
    rest = await history(intake, cid, cursor=first["next_cursor"], limit=10)
    assert [e["seq"] for e in first["items"] + rest["items"]] == [3, 2, 1, 0] and rest["next_cursor"] is None


async def test_a_channel_sees_and_lists_only_customers_it_serves(intake: ServiceUnderTest) -> None:
    mine = {"name": "Zhao Lei", "email": "zhao@example.com", "region_code": "310000", "tier": "gold"}
    r = await intake.http.post("/v1/customers", json=mine, headers=intake.auth(WEB))
    assert r.status_code == 201 and r.json()["tier"] == "standard", r.text  # a channel sets no tier
    cid = r.json()["id"]
    assert r.json()["email"] != "zhao@example.com"  # masked for the channel
    theirs = {"name": "Sun Li", "email": "sun@example.com", "region_code": "310000"}
    other = (await intake.http.post("/v1/customers", json=theirs, headers=intake.auth(PHONE))).json()["id"]

    listed = (await intake.http.get("/v1/customers", headers=intake.auth(WEB))).json()
    assert [c["id"] for c in listed["items"]] == [cid]
    assert (
        await intake.http.get(f"/v1/customers/{other}/history", headers=intake.auth(WEB))
    ).status_code == 404
    everyone = (await intake.http.get("/v1/customers", params={"limit": 1}, headers=intake.auth(SUP))).json()
    more = await intake.http.get(
        "/v1/customers", params={"cursor": everyone["next_cursor"]}, headers=intake.auth(SUP)
    )
    assert {c["id"] for c in everyone["items"] + more.json()["items"]} == {cid, other}
    r = await intake.http.get("/v1/customers", headers=intake.auth("dev-technician-token"))
    assert r.status_code == 403

    # Another channel that knows the e-mail links itself (200), filling only what is empty.
    again = {**mine, "name": "Somebody Else", "address": "2 Huaihai Road"}
    r = await intake.http.post("/v1/customers", json=again, headers=intake.auth(PHONE))
    assert r.status_code == 200 and r.json()["id"] == cid
    full = await customer(intake, cid)
    assert full["name"] == "Zhao Lei" and full["address"] == "2 Huaihai Road" and full["tier"] == "standard"


async def test_requests_fill_empty_fields_and_never_overwrite_nor_change_the_tier(
    intake: ServiceUnderTest,
) -> None:
    def request(**customer: Any) -> dict[str, Any]:
        return {
            "channel": "web",
            "customer": {"phone": "+8613700137000", "region_code": "310000", **customer},
            "product": {"device_type": "washer"},
            "title": "Broken",
        }

    r = await intake.http.post("/v1/tickets", json=request(name="Qian Wu"), headers=intake.auth(WEB))
    cid = r.json()["customer_id"]
    r = await intake.http.put(
        f"/v1/customers/{cid}/tier", json={"tier": "key_account"}, headers=intake.auth(SUP)
    )
    assert r.status_code == 200 and r.json()["tier"] == "key_account"
    later = request(name="Wrong Name", address="3 Yan'an Road", tier="standard")
    r = await intake.http.post("/v1/tickets", json=later, headers=intake.auth(WEB))
    assert r.status_code == 201 and r.json()["customer_id"] == cid
    record = await customer(intake, cid)
    assert record["name"] == "Qian Wu" and record["address"] == "3 Yan'an Road"
    assert record["tier"] == "key_account"
    assert [e["change"] for e in (await history(intake, cid))["items"]] == ["filled", "tier_set", "created"]


async def test_the_change_log_keeps_the_last_hundred_changes(intake: ServiceUnderTest) -> None:
    body = {"name": "Zhou Xun", "email": "zhou@example.com", "region_code": "310000"}
    cid = (await intake.http.post("/v1/customers", json=body, headers=intake.auth(SUP))).json()["id"]
    for n in range(110):
        r = await intake.http.patch(
            f"/v1/customers/{cid}", json={"address": f"{n} Road"}, headers=intake.auth(SUP)
        )
        assert r.status_code == 200, r.text
    seen: list[int] = []
    cursor = None
    while True:
        page = await history(intake, cid, limit=40, **({"cursor": cursor} if cursor else {}))
        seen += [e["seq"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(110, 10, -1))
    stored = await intake.runtime.db["customer_history"].count_documents({"customer_id": cid})
    assert stored <= 100


async def test_a_crash_between_the_ticket_and_its_customer_record_is_healed_by_the_replay(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticket is written, then the database goes away before the customer's record is (D6): the
    caller gets a 503 and sends the same request again with its Idempotency-Key; the replay writes the
    record, and the customer's history shows the ticket."""
    store: Any = intake.app.state.intake.store
    record_customer = store.record_customer

    async def gone(*args: Any, **kwargs: Any) -> None:
        raise AutoReconnect("connection closed")

    body = {
        "channel": "web",
        "customer": {"name": "Zhou Min", "phone": "+8613800138123", "region_code": "310000"},
        "product": {"device_type": "washer"},
        "title": "Drum does not turn",
    }
    headers = {**intake.auth(WEB), "Idempotency-Key": "d6-crash-1"}
    monkeypatch.setattr(store, "record_customer", gone)
    first = await intake.http.post("/v1/tickets", json=body, headers=headers)
    assert first.status_code == 503, first.text
    monkeypatch.setattr(store, "record_customer", record_customer)
    again = await intake.http.post("/v1/tickets", json=body, headers=headers)
    assert again.status_code == 200, again.text  # replayed: the ticket the first attempt wrote
    ticket = again.json()
    record = await customer(intake, ticket["customer_id"])
    assert record["name"] == "Zhou Min"
    assert [t["id"] for t in record["tickets"]] == [ticket["id"]]


async def test_a_database_time_limit_is_a_503_to_retry_and_changes_nothing(
    intake: ServiceUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Any = intake.app.state.intake.store

    async def too_slow(*args: Any, **kwargs: Any) -> Any:
        raise ExecutionTimeout("operation exceeded time limit", code=50)

    monkeypatch.setattr(store, "customer", too_slow)
    body = {
        "channel": "web",
        "customer": {"name": "Sun Li", "phone": "+8613800138456", "region_code": "310000"},
        "product": {"device_type": "washer"},
        "title": "Leaks",
    }
    r = await intake.http.post("/v1/tickets", json=body, headers=intake.auth(WEB))
    assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
    assert r.json()["error"] == "database_unavailable"
    listed = await intake.http.get("/v1/tickets", headers=intake.auth(SUP))
    assert listed.status_code == 200 and listed.json()["items"] == []
