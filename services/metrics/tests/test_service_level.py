"""Metrics in-process (FastStream's TestKafkaBroker, in-memory MongoDB): events of every stream fold into
the KPIs read over HTTP; an event delivered again (at once or later) is counted once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aftersales.metrics.app import Settings, build
from aftersales.shared.contracts.common import Channel
from aftersales.shared.envelope import CloudEvent
from aftersales.shared.testing import (
    FAST,
    ServiceUnderTest,
    in_process,
    ticket_created,
    work_order_assigned,
    work_order_resolved,
)

AT = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
DAY = {"from": "2026-11-18", "to": "2026-11-18"}


@pytest.fixture
async def metrics() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST, publish_reports=False)) as svc:
        yield svc


def created(ticket_id: str, channel: Channel) -> CloudEvent:
    return ticket_created(ticket_id, channel=channel, created_at=AT)


def assigned(ticket_id: str) -> CloudEvent:
    return work_order_assigned(ticket_id, grid_id="xuhui", occurred_at=AT + timedelta(minutes=5))


def resolved(ticket_id: str) -> CloudEvent:
    return work_order_resolved(ticket_id, grid_id="xuhui", occurred_at=AT + timedelta(minutes=65))


async def kpis(svc: ServiceUnderTest, **params: str) -> list[dict[str, Any]]:
    r = await svc.http.get("/v1/kpis", params=params, headers=svc.auth("dev-supervisor-token"))
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["rows"]
    return rows


async def test_events_of_every_stream_are_counted_in_the_kpis(metrics: ServiceUnderTest) -> None:
    for ticket_id, channel in (("A", Channel.WEB), ("B", Channel.WEB), ("C", Channel.PHONE)):
        await metrics.deliver(created(ticket_id, channel))
        await metrics.deliver(assigned(ticket_id))
    await metrics.deliver(resolved("A"))

    [row] = await kpis(metrics, group_by="all", **DAY)
    assert row["counts"]["created"] == 3
    assert row["backlog"] == 2
    assert row["kpis"]["avg_resolution_s"] == 65 * 60
    by_channel = {r["value"]: r["counts"]["created"] for r in await kpis(metrics, group_by="channel", **DAY)}
    assert by_channel == {"web": 2, "phone": 1}
    assert metrics.dead_letters == []


async def test_an_event_delivered_twice_is_counted_once(metrics: ServiceUnderTest) -> None:
    first = created("A", Channel.WEB)
    await metrics.deliver(first, replicas=2)
    await metrics.deliver(first)
    await metrics.deliver(created("B", Channel.WEB))

    [row] = await kpis(metrics, group_by="all", **DAY)
    assert row["counts"]["created"] == 2
