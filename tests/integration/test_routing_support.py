"""Helpers of the routing integration tests (no tests here): set-up over HTTP, ticket events, topic reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord
from harness import Infra, auth, data_of, headers_of, read_topic

from aftersales.shared.contracts.events import TicketCreated
from aftersales.shared.envelope import new_event

ALWAYS = {str(d): [{"start": "00:00", "end": "24:00"}] for d in range(7)}
CITY = ["310000", "310100"]


def grid_body(
    gid: str,
    district: str,
    *,
    neighbours: Sequence[str] = (),
    surge: dict[str, Any] | None = None,
    supervisor: str | None = "sup-1",
) -> dict[str, Any]:
    return {
        "id": gid,
        "name": gid,
        "region_path": [*CITY, district],
        "calendar": {"timezone": "UTC", "weekly": ALWAYS},
        "teams": [{"id": f"{gid}-team", "name": "team"}],
        "neighbours": list(neighbours),
        "supervisor_id": supervisor,
        "surge": surge or {"backlog_threshold": 10_000, "capacity_factor": 1.5, "automatic": False},
    }


def tech_body(tid: str, gid: str, *, capacity: int, tier: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": tid, "name": tid, "grid_id": gid, "tier": tier, "capacity": capacity, **extra}


async def put_all(
    client: httpx.AsyncClient,
    base: str,
    grids: Sequence[dict[str, Any]],
    techs: Sequence[dict[str, Any]],
    token: str = "dev-admin-token",
) -> None:
    for g in grids:
        r = await client.put(f"{base}/v1/grids/{g['id']}", json=g, headers=auth(token))
        assert r.status_code in (200, 201), r.text
    for t in techs:
        r = await client.put(f"{base}/v1/technicians/{t['id']}", json=t, headers=auth(token))
        assert r.status_code in (200, 201), r.text


def ticket(
    ticket_id: str,
    district: str,
    *,
    priority: str = "P3",
    device: str = "air_conditioner",
    created_at: datetime | None = None,
) -> Any:
    return new_event(
        TicketCreated(
            ticket_id=ticket_id,
            channel="web",  # type: ignore[arg-type]
            category="hardware_fault",  # type: ignore[arg-type]
            priority=priority,  # type: ignore[arg-type]
            customer_id=f"C-{ticket_id}",
            region_code="/".join([*CITY, district, "000001"]),
            device_type=device,
            created_at=created_at or datetime.now(UTC),
            rules_version="test",
        ),
        source="/aftersales/intake",
        subject=ticket_id,
    )


async def produce_events(infra: Infra, topic: str, events: Sequence[Any], *, chunk: int = 250) -> None:
    """Produce CloudEvents in bounded chunks, waiting for every acknowledgement."""
    producer = AIOKafkaProducer(
        bootstrap_servers=infra.kafka, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        for i in range(0, len(events), chunk):
            futures = [
                await producer.send(
                    topic, e.value(), key=e.key, headers=[(k, v.encode()) for k, v in e.headers().items()]
                )
                for e in events[i : i + chunk]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def event_type(record: ConsumerRecord[bytes, bytes]) -> str:
    return headers_of(record)["ce_type"].removeprefix("aftersales.assignment.").removesuffix(".v1")


async def assignment_events(
    infra: Infra,
    topic: str,
    *,
    expect: int,
    types: Sequence[str] | None = None,
    timeout_s: float = 30.0,
    settle_s: float = 0.0,
) -> list[tuple[str, dict[str, Any]]]:
    """Read (type, data) of the assignments topic from the beginning until `expect` distinct events (by
    ce_id: the outbox may re-publish, consumers dedupe) of the wanted types arrived, then `settle_s` more;
    fail naming what arrived when they do not come in time. `expect=ALL`: every such event there now."""
    records = await read_topic(
        infra,
        topic,
        expect=expect,
        timeout_s=timeout_s,
        settle_s=settle_s,
        distinct=True,
        where=lambda r: types is None or event_type(r) in types,
    )
    return [(event_type(r), data_of(r)) for r in records]


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
