"""On-site KPIs (issue 16 item 5) with metrics and fieldwork as real processes on real Kafka + FerretDB.

A ticket routed to a technician (routing's events, produced to Kafka) is visited through fieldwork's HTTP
API (booked, departed, checked in, a part from the van, checked out, report signed) and then resolved:
metrics counts it as a first-time fix, for its grid and its technician. Beside it, the metrics scenario's
tickets T1 and T3 get fieldwork's events directly (one visit with parts; two visits and a no-show), and
GET /v1/kpis and /metrics give exactly the figures computed from that plan, with the parts consumed and a
low-stock alert per grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from field_events import (
    FIELD_PLANS,
    expected_field_kpis,
    expected_stock_figures,
    field_events,
    stock_low_events,
)
from harness import Infra, Platform, auth, unique, wait_until
from test_metrics import PLANS, SOURCES, events_of, produce_all

from aftersales.shared.contracts import Topic
from aftersales.shared.contracts.common import Category, Channel, Priority
from aftersales.shared.contracts.events import TicketCreated, WorkOrderAssigned, WorkOrderResolved
from aftersales.shared.envelope import CloudEvent, new_event

DESK, TECH = auth("dev-supervisor-token"), auth("dev-technician-token")
TECHNICIAN = "tech-demo"  # the subject of dev-technician-token
WEEK = {"from": "2026-11-16", "to": "2026-11-22"}  # the scenario's week (test_metrics.DAY)


def routed(ticket_id: str, grid: str) -> list[tuple[Topic, CloudEvent]]:
    """The ticket opened by intake and assigned by routing to TECHNICIAN, as their events."""
    now = datetime.now(UTC)
    kind: dict[str, Any] = dict(priority=Priority.P2, category=Category.HARDWARE_FAULT)
    created = TicketCreated(
        ticket_id=ticket_id,
        channel=Channel.WEB,
        customer_id="C-field",
        region_code="310000",
        device_type="boiler",
        created_at=now - timedelta(minutes=5),
        rules_version="r1",
        **kind,
    )
    assigned = WorkOrderAssigned(
        ticket_id=ticket_id,
        grid_id=grid,
        occurred_at=now - timedelta(minutes=4),
        technician_id=TECHNICIAN,
        tier=1,
        via="direct",
        **kind,
    )
    return [
        (Topic.TICKETS, new_event(created, source=SOURCES[Topic.TICKETS], subject=ticket_id)),
        (Topic.ASSIGNMENTS, new_event(assigned, source=SOURCES[Topic.ASSIGNMENTS], subject=ticket_id)),
    ]


def resolved(ticket_id: str, grid: str) -> tuple[Topic, CloudEvent]:
    data = WorkOrderResolved(
        ticket_id=ticket_id,
        grid_id=grid,
        occurred_at=datetime.now(UTC),
        technician_id=TECHNICIAN,
        resolution_code="replaced_part",
        priority=Priority.P2,
        category=Category.HARDWARE_FAULT,
    )
    return Topic.ASSIGNMENTS, new_event(data, source=SOURCES[Topic.ASSIGNMENTS], subject=ticket_id)


async def post(
    client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str], status: int = 200
) -> Any:
    r = await client.post(url, json=body, headers=headers)
    assert r.status_code == status, r.text
    return r.json()


async def visit_through_fieldwork(client: httpx.AsyncClient, fw: str, ticket_id: str) -> dict[str, Any]:
    """Book, carry out and report a visit with one part (25.00) from the van, a second line taken and given
    back; return the checked-out visit."""

    async def known() -> bool:
        r = await client.get(f"{fw}/v1/work-orders/{ticket_id}", headers=DESK)
        return r.status_code == 200 and r.json()["technician_id"] == TECHNICIAN

    await wait_until(f"fieldwork to learn who holds {ticket_id}", known)
    receipt = {"quantity": 3, "unit_cost_cents": 2500}
    await post(client, f"{fw}/v1/stock/van:{TECHNICIAN}/FAN-9/receipts", receipt, DESK)
    start = datetime.now(UTC) + timedelta(hours=1)
    window = {"window_start": start.isoformat(), "window_end": (start + timedelta(hours=2)).isoformat()}
    booked = await post(client, f"{fw}/v1/appointments", {"ticket_id": ticket_id, **window}, DESK, 201)
    appointment = f"{fw}/v1/appointments/{booked['id']}"
    await post(client, f"{appointment}/depart", None, TECH)
    await post(client, f"{appointment}/check-in", None, TECH)
    report = await post(
        client,
        f"{fw}/v1/reports",
        {"ticket_id": ticket_id, "work_performed": "replaced the fan", "resolution_code": "replaced_part"},
        TECH,
        201,
    )
    line = {"line_id": "L1", "part_id": "FAN-9", "location_id": f"van:{TECHNICIAN}", "quantity": 1}
    await post(client, f"{fw}/v1/reports/{report['id']}/parts", line, TECH)
    await post(client, f"{fw}/v1/reports/{report['id']}/parts", {**line, "line_id": "L2"}, TECH)
    r = await client.delete(f"{fw}/v1/reports/{report['id']}/parts/L2", headers=TECH)  # given back
    assert r.status_code == 200, r.text
    done: dict[str, Any] = await post(client, f"{appointment}/check-out", {"work_done": "fan replaced"}, TECH)
    strokes = [[[10, 20], [30, 45], [60, 40]]]
    await post(
        client, f"{fw}/v1/reports/{report['id']}/sign", {"signer_name": "Li Lei", "strokes": strokes}, TECH
    )
    return done


async def rows(client: httpx.AsyncClient, url: str, **params: str) -> dict[str, dict[str, Any]]:
    r = await client.get(f"{url}/v1/kpis", params=params, headers=DESK)
    assert r.status_code == 200, r.text
    return {row["value"]: row for row in r.json()["rows"]}


async def test_field_kpis_by_grid_and_technician_from_fieldwork_and_its_events(
    infra: Infra, platform: Platform
) -> None:
    procs = await platform.start_ready(
        "metrics", "fieldwork", SNAPSHOT_INTERVAL_S="1", PUBLISH_REPORTS="false"
    )
    metrics, fw = procs["metrics"].url, procs["fieldwork"].url
    ticket_id, grid = unique("FK-"), unique("G-F-")
    scenario = [
        (t, new_event(d, source=SOURCES[t], subject=p.tid))
        for p in PLANS
        if p.tid in {f.tid for f in FIELD_PLANS}
        for t, d in events_of(p)
    ]
    await produce_all(
        infra, platform, [*scenario, *field_events(), *stock_low_events(), *routed(ticket_id, grid)]
    )
    async with httpx.AsyncClient(timeout=20) as client:
        done = await visit_through_fieldwork(client, fw, ticket_id)
        await produce_all(infra, platform, [resolved(ticket_id, grid)])

        async def counted() -> dict[str, Any] | None:
            row = (await rows(client, metrics, group_by="grid")).get(grid)
            done = row and row["counts"].get("field_resolved") and row["counts"].get("parts_used") == 1
            return row if done else None  # the line given back is no part used

        row = await wait_until("the visited ticket's resolution in the KPIs", counted, timeout_s=20)
        assert row["kpis"]["avg_parts_cost_per_field_resolution"] == 25.0
        assert row["kpis"]["first_time_fix_rate"] == 1.0
        assert row["kpis"]["appointment_kept_rate"] == 1.0
        assert row["kpis"]["avg_work_s"] == done["work_s"]
        assert (row["counts"]["field_visits"], row["counts"]["parts_used"]) == (1, 1)
        assert (row["parts_consumed"], row["parts_consumed_cost"]) == (
            1,
            25.0,
        )  # the van's, on its ticket's grid
        tech = (await rows(client, metrics, group_by="technician"))[TECHNICIAN]
        assert (tech["counts"]["field_resolved"], tech["counts"]["first_time_fixed"]) == (1, 1)

        # The scenario's week: exactly the figures computed from the plan, by grid and by technician.
        by_grid = await rows(client, metrics, group_by="grid", **WEEK)
        for grid_id, want in expected_field_kpis().items():
            got = {name: by_grid[grid_id]["kpis"][name] for name in want}
            assert got == want, grid_id
        for grid_id, (parts, cost, alerts) in expected_stock_figures().items():
            got_stock = by_grid[grid_id]
            assert (got_stock["parts_consumed"], got_stock["parts_consumed_cost"]) == (parts, cost), grid_id
            assert got_stock["stock_low_alerts"] == alerts, grid_id
        by_tech = await rows(client, metrics, group_by="technician", **WEEK)
        assert by_tech["tech-a1"]["kpis"]["first_time_fix_rate"] == 1.0
        assert by_tech["tech-b1"]["counts"]["appointments_no_show_customer"] == 1

        # Prometheus: by grid, never by technician.
        async def exported() -> str | None:
            text = (await client.get(f"{metrics}/metrics")).text
            return (
                text
                if f'aftersales_kpi_field_resolutions_total{{fix="first_time",grid="{grid}"}} 1.0' in text
                else None
            )

        text = await wait_until("the field series in a KPI snapshot", exported, timeout_s=15)
        assert 'aftersales_kpi_field_resolutions_total{fix="repeat",grid="G-B"} 1.0' in text
        assert 'aftersales_kpi_field_parts_cost_total{grid="G-A"} 30.0' in text
        assert 'aftersales_kpi_parts_consumed_total{grid="G-A"} 2.0' in text
        assert 'aftersales_kpi_stock_low_total{grid="G-A"} 1.0' in text
        field_lines = [line for line in text.splitlines() if line.startswith("aftersales_kpi_field_")]
        assert field_lines and not any(TECHNICIAN in line or "tech-a1" in line for line in field_lines)
