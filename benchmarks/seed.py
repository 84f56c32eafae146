"""History for the growth run: run a few tickets through the whole after-sales loop on a platform of
their own (assigned, accepted, resolved, callback confirmed, survey answered, closed), then clone every
document they left in every service database into another platform's databases, in bulk."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import PIPELINE_SERVICE_NAMES, Platform, auth, mongo, wait_until

from aftersales.shared.contracts import Topic
from benchmarks.clone import TemplateSet, build_templates, seed
from benchmarks.config import Config
from benchmarks.load import post_counted
from benchmarks.pipeline import start_platform
from benchmarks.probes import LagProbe, wait_drained
from benchmarks.teardown import stop_all

ADMIN = auth()


async def _close_one(http: httpx.AsyncClient, platform: Platform, i: int, tag: str) -> str:
    """Take one ticket through the loop until intake says closed; return its id."""
    intake, routing = platform.url("intake"), platform.url("routing")
    followup, feedback = platform.url("followup"), platform.url("feedback")
    shot = await post_counted(http, intake, i, tag)
    if not shot.ok or shot.ticket_id is None:
        raise AssertionError(f"POST answered {shot.status}")
    ticket_id = shot.ticket_id

    async def status_is(*wanted: str) -> bool:
        r = await http.get(f"{intake}/v1/tickets/{ticket_id}", headers=ADMIN)
        return r.status_code == 200 and r.json()["status"] in wanted

    await wait_until("assigned", lambda: status_is("assigned"), 60, 0.3)
    for step in ("accept", "start"):
        r = await http.post(f"{routing}/v1/work-orders/{ticket_id}/{step}", json={}, headers=ADMIN)
        assert r.status_code == 200, f"{step}: {r.status_code} {r.text[:200]}"
    r = await http.post(
        f"{routing}/v1/work-orders/{ticket_id}/resolve",
        json={"resolution_code": "replaced_part"},
        headers=ADMIN,
    )
    assert r.status_code == 200, f"resolve: {r.status_code} {r.text[:200]}"

    async def listed(url: str, path: str, **where: str) -> list[dict[str, Any]]:
        r = await http.get(f"{url}{path}", params={"ticket_id": ticket_id}, headers=ADMIN)
        items = r.json().get("items", []) if r.status_code == 200 else []
        return [x for x in items if all(x.get(k) == v for k, v in where.items())]

    [visit, *_] = await wait_until(
        "callback visit", lambda: listed(followup, "/v1/visits", kind="callback"), 60
    )
    r = await http.post(
        f"{followup}/v1/visits/{visit['id']}/outcome", json={"outcome": "confirmed_resolved"}, headers=ADMIN
    )
    assert r.status_code == 200, f"visit outcome: {r.status_code} {r.text[:200]}"
    [survey, *_] = await wait_until("survey", lambda: listed(feedback, "/v1/surveys", status="sent"), 60)
    r = await http.post(f"{feedback}/v1/surveys/{survey['token']}", json={"csat": 5, "nps": 9})
    assert r.status_code == 200, f"survey answer: {r.status_code} {r.text[:200]}"
    await wait_until("closed", lambda: status_is("closed"), 60, 0.3)
    return ticket_id


async def _event_subjects(platform: Platform) -> dict[str, str]:
    """ce_id -> ce_subject of every event on the platform's topics."""
    consumer = AIOKafkaConsumer(bootstrap_servers=platform.infra.kafka, enable_auto_commit=False)
    await consumer.start()
    out: dict[str, str] = {}
    try:
        await consumer._client.force_metadata_update()
        parts = [
            TopicPartition(platform.topic(t.value), p)
            for t in Topic
            for p in consumer.partitions_for_topic(platform.topic(t.value)) or ()
        ]
        if not parts:
            return out
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in parts}
            if all(positions[tp] >= ends[tp] for tp in parts):
                break
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for r in records:
                    h = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                    if "ce_id" in h and "ce_subject" in h:
                        out[h["ce_id"]] = h["ce_subject"]
    finally:
        await consumer.stop()
    return out


async def _read_all(platform: Platform) -> list[tuple[str, str, dict[str, Any]]]:
    client = mongo(platform.infra)
    out: list[tuple[str, str, dict[str, Any]]] = []
    try:
        for service in PIPELINE_SERVICE_NAMES:
            db = client[platform.database(service)]
            for name in await db.list_collection_names():
                out.extend([(service, name, doc) async for doc in db[name].find({})])
    finally:
        await client.close()
    return out


async def make_templates(platform: Platform, cfg: Config) -> tuple[TemplateSet, list[str]]:
    """Close cfg.growth_templates tickets on `platform` (started here, stopped before returning)."""
    print(
        f"[{time.strftime('%H:%M:%S')}] growth: closing {cfg.growth_templates} template tickets", flush=True
    )
    await start_platform(platform)
    tag = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(5)
    failures: list[str] = []

    async def one(http: httpx.AsyncClient, i: int) -> str | None:
        async with gate:
            try:
                return await _close_one(http, platform, i, tag)
            except (AssertionError, httpx.HTTPError, KeyError, ValueError) as exc:
                failures.append(str(exc)[:200])
                return None

    async with httpx.AsyncClient(timeout=30.0) as http:
        closed = [t for t in await asyncio.gather(*(one(http, i) for i in range(cfg.growth_templates))) if t]
    if failures:
        print(f"    {len(failures)} template ticket(s) did not close: {failures[0]}", flush=True)
    if not closed:
        raise RuntimeError("no template ticket could be closed; see .test-logs/ for the services' logs")
    probe = await LagProbe(platform.infra.kafka, platform.prefix).start()
    try:
        await wait_drained(probe, 60)
    finally:
        await probe.stop()
    await asyncio.sleep(2)  # let the outbox relays and timers settle
    await stop_all(platform.services.values())
    subjects = await _event_subjects(platform)
    templates = build_templates(await _read_all(platform), closed, subjects)
    return templates, closed


async def seed_history(platform: Platform, templates: TemplateSet, cfg: Config) -> dict[str, Any]:
    """Clone cfg.growth_tickets tickets of history into the (stopped) platform's databases."""
    n = cfg.growth_tickets
    per_ticket = templates.per_ticket()
    k = sum(1 for f in templates.families if f.docs)
    print(
        f"[{time.strftime('%H:%M:%S')}] growth: seeding {n:,} tickets of history, cloned from {k} closed "
        f"tickets ({sum(per_ticket.values()) / max(k, 1):.1f} documents each)",
        flush=True,
    )
    client = mongo(platform.infra)
    try:
        databases = {s: platform.database(s) for s in PIPELINE_SERVICE_NAMES}
        report = await seed(client, databases, templates, n, days=cfg.growth_days, chunk=cfg.seed_chunk)
    finally:
        await client.close()
    for where in sorted(per_ticket):
        dup = report.duplicates.get(where, 0)
        print(
            f"    {where:<28} {report.inserted.get(where, 0):>10,} documents"
            + (f" ({dup:,} duplicate keys skipped)" if dup else ""),
            flush=True,
        )
    for why, count in sorted(templates.skipped.items()):
        print(f"    not cloned: {why}: {count} document(s) of the template platform", flush=True)
    total = sum(report.inserted.values())
    print(f"    {total:,} documents in {report.seconds:.0f} s ({total / max(report.seconds, 1e-9):,.0f}/s)")
    return {
        "tickets": n,
        "templates": k,
        "documents": total,
        "seconds": report.seconds,
        "per_collection": dict(report.inserted),
        "duplicates": dict(report.duplicates),
        "not_cloned": dict(templates.skipped),
    }
