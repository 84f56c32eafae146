"""Intake as a real process: IoT alert storms collapse into one ticket per device and fault, over Kafka
(1,000 interleaved alerts) and over concurrent HTTP, and a storm's window closes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from harness import Platform, auth, data_of, headers_of, mongo, read_to_end, read_topic, wait_until
from test_intake import iot_body, request_event

from aftersales.shared.contracts import Topic

DEVICES = 10
ALERTS_PER_DEVICE = 100


async def storm_tickets(platform: Platform) -> list[dict[str, Any]]:
    client = mongo(platform.infra)
    try:
        db = client[platform.database("intake")]
        return [doc async for doc in db["tickets"].find({"channel": "iot"}, {"outbox": 0, "request_keys": 0})]
    finally:
        await client.close()


async def test_a_thousand_interleaved_alerts_for_ten_devices_make_exactly_ten_tickets(
    platform: Platform,
) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    serials = [f"CH-{uuid.uuid4().hex[:6]}-{d}" for d in range(DEVICES)]
    t0 = datetime.now(UTC)
    observed: dict[str, list[datetime]] = {s: [] for s in serials}
    producer = AIOKafkaProducer(bootstrap_servers=platform.infra.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        pending = []
        for i in range(DEVICES * ALERTS_PER_DEVICE):  # device 0, 1, ... 9, 0, 1, ...: interleaved
            serial = serials[i % DEVICES]
            at = t0 + timedelta(milliseconds=i)
            observed[serial].append(at)
            event = request_event(iot_body(serial, "E42", at), key=serial)
            pending.append(
                await producer.send(
                    platform.topic(Topic.REQUESTS),
                    event.value(),
                    key=event.key,
                    headers=[(k, v.encode()) for k, v in event.headers().items()],
                )
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()

    progress: dict[str, int] = {}

    async def all_counted() -> list[dict[str, Any]] | None:
        docs = await storm_tickets(platform)
        progress.update(tickets=len(docs), alerts=sum(d.get("alert_count") or 0 for d in docs))
        return docs if progress["alerts"] >= DEVICES * ALERTS_PER_DEVICE else None

    started = time.monotonic()
    try:
        docs = await wait_until("every alert counted", all_counted, timeout_s=180, interval_s=1)
    except AssertionError as exc:
        raise AssertionError(f"{str(exc)[:200]}; progress {progress}") from None
    assert len(docs) == DEVICES
    for doc in docs:
        serial = doc["product"]["serial"]
        assert doc["alert_count"] == ALERTS_PER_DEVICE
        assert abs(doc["first_seen"] - min(observed[serial])) < timedelta(milliseconds=1)
        assert abs(doc["last_seen"] - max(observed[serial])) < timedelta(milliseconds=1)
        assert doc["category"] == "hardware_fault" and doc["fault_code"] == "E42"

    # Alerts fold into their storm a batch at a time: one ticket.merged per fold, carrying the running
    # alert_count, so the last merge of each ticket counts all of its alerts.
    def is_final_merge(r: Any) -> bool:
        return "merged" in headers_of(r)["ce_type"] and data_of(r)["alert_count"] == ALERTS_PER_DEVICE

    await read_topic(platform.infra, platform.topic(Topic.TICKETS), expect=DEVICES, where=is_final_merge)
    print(f"1,000 alerts collapsed and relayed in {time.monotonic() - started:.1f}s after producing")
    async with httpx.AsyncClient(base_url=intake.url, timeout=30) as client:
        metrics = (await client.get("/metrics")).text
        assert (
            f'aftersales_tickets_merged_total{{channel="iot"}} {DEVICES * (ALERTS_PER_DEVICE - 1)}.0'
            in metrics
        )
    assert intake.stop() == 0  # then the topic holds all it will ever get from this run
    events = await read_to_end(platform.infra, platform.topic(Topic.TICKETS))
    kinds = Counter(headers_of(r)["ce_type"] for r in events)
    assert kinds["aftersales.ticket.created.v1"] == DEVICES
    assert DEVICES <= kinds["aftersales.ticket.merged.v1"] <= DEVICES * (ALERTS_PER_DEVICE - 1)
    assert set(kinds) == {"aftersales.ticket.created.v1", "aftersales.ticket.merged.v1"}
    counts: dict[str, list[int]] = {}
    for r in events:
        if "merged" in headers_of(r)["ce_type"]:
            counts.setdefault(data_of(r)["ticket_id"], []).append(data_of(r)["alert_count"])
    assert len(counts) == DEVICES
    for seen in counts.values():  # in order per ticket, growing, the last one counting every alert
        assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[-1] == ALERTS_PER_DEVICE


async def test_concurrent_http_alerts_collapse_and_the_window_closes(platform: Platform) -> None:
    intake = (await platform.start_ready("intake", STORM_WINDOW_S="900"))["intake"]
    serials = [f"HV-{uuid.uuid4().hex[:6]}-{d}" for d in range(3)]
    t0 = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=intake.url, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/tickets",
                    json=iot_body(serials[i % 3], "E7", t0 + timedelta(milliseconds=i)),
                    headers=auth("dev-iot-token"),
                )
                for i in range(45)
            )
        )
        assert all(r.status_code in (200, 201) for r in responses), [
            r.text for r in responses if r.status_code > 201
        ]
        assert Counter(r.json()["outcome"] for r in responses) == {"created": 3, "merged": 42}
        assert len({r.json()["id"] for r in responses}) == 3

        # Same device: a different fault is another ticket; the same fault 15 minutes after the last alert
        # still joins (the edge), 15 minutes and a second later starts a new ticket.
        lone = serials[0]
        last = t0 + timedelta(milliseconds=42)
        other_fault = await client.post(
            "/v1/tickets", json=iot_body(lone, "E8", last), headers=auth("dev-iot-token")
        )
        at_edge = await client.post(
            "/v1/tickets",
            json=iot_body(lone, "E7", last + timedelta(seconds=900)),
            headers=auth("dev-iot-token"),
        )
        after = await client.post(
            "/v1/tickets",
            json=iot_body(lone, "E7", last + timedelta(seconds=1801)),
            headers=auth("dev-iot-token"),
        )
        assert other_fault.json()["outcome"] == "created"
        assert at_edge.json()["outcome"] == "merged" and at_edge.json()["alert_count"] == 16
        assert after.json()["outcome"] == "created" and after.json()["id"] != at_edge.json()["id"]
        # A critical alert in an open storm raises the ticket's priority.
        critical = await client.post(
            "/v1/tickets",
            json=iot_body(lone, "E7", last + timedelta(seconds=1802), severity=5),
            headers=auth("dev-iot-token"),
        )
        assert critical.json()["outcome"] == "merged" and critical.json()["priority"] == "P1"

    docs = await storm_tickets(platform)
    assert sorted(d["alert_count"] for d in docs) == [1, 2, 15, 15, 16]
