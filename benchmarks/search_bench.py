"""The search stage: seed BENCH_SEARCH_TICKETS tickets (Chinese text, customers, serials, regions) into
intake's database in bulk through intake's own code (ticket documents from `document_of`, terms from
`ticket_terms`/`seal`, postings from `load_index`), start intake on it, and time
`GET /v1/search/tickets` by phone, e-mail-less desk shapes, name, ticket id, serial, rare and common
Chinese text, text with a filter, and filters only. Target: p99 ≤ 200 ms with 100k tickets stored."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from harness import TEST_CUSTOMER_ID_KEY, Infra, Platform, ServiceProcess, auth, mongo

from aftersales.intake import identity
from aftersales.intake.domain import Ticket, TicketStatus
from aftersales.intake.search import seal, ticket_terms
from aftersales.intake.search_store import load_index
from aftersales.intake.store import CUSTOMERS, TICKETS, document_of
from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from benchmarks.config import Config
from benchmarks.pipeline import SERVICE_DEFAULTS
from benchmarks.probes import wait_swept
from benchmarks.teardown import stop_all

DEVICES = ["空调", "热水器", "洗衣机", "冰箱", "燃气灶", "净水器", "扫地机器人", "电视"]
FAULTS = ["不制冷", "漏水", "不加热", "噪音大", "无法开机", "显示故障代码", "异味", "遥控失灵", "跳闸"]
DETAILS = [
    "客户要求尽快上门",
    "已过保修期",
    "安装后第三天出现",
    "夜间更明显",
    "上次维修后复发",
    "室外机有异响",
]
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
REGIONS = [
    f"{p}0000/{p}{c:02d}00/{p}{c:02d}{d:02d}" for p in (31, 44, 11, 32) for c in (1, 3) for d in (1, 4, 5)
]
KEY = TEST_CUSTOMER_ID_KEY.encode()
STATUSES = [TicketStatus.CLOSED] * 6 + [TicketStatus.RESOLVED, TicketStatus.ASSIGNED, TicketStatus.NEW]


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _ticket(i: int, rng: random.Random, customer: tuple[str, str, str], now: datetime) -> Ticket:
    device, fault = rng.choice(DEVICES), rng.choice(FAULTS)
    code = f"E{rng.randint(1, 99)}" if fault == "显示故障代码" else ""
    created = now - timedelta(seconds=(100_000_000 - i) % (90 * 86400) + rng.random())
    cid, _, _ = customer
    return Ticket(
        id=f"S-{i:07d}-{rng.getrandbits(32):08x}",
        status=rng.choice(STATUSES),
        channel=rng.choice([Channel.WEB, Channel.PHONE, Channel.CHAT]),
        category=Category.HARDWARE_FAULT,
        priority=rng.choice([Priority.P1, Priority.P2, Priority.P3, Priority.P3, Priority.P4]),
        rules_version="bench",
        title=f"{device}{fault}{code}",
        description=f"{device}{fault}{code}，{rng.choice(DETAILS)}。型号 KF-{rng.randint(20, 72)}GW",
        customer_id=cid,
        customer_tier=CustomerTier.STANDARD,
        customer_timezone="Asia/Shanghai",
        region_code=rng.choice(REGIONS),
        product={"device_type": "appliance", "model": None, "serial": f"SN{i:08d}X", "purchase_date": None},
        created_by="http:bench",
        source="http",
        created_at=created,
        updated_at=created,
        status_changed_at=created,
        storm_key=f"released:S-{i}",
    )


async def _seed(platform: Platform, n: int) -> tuple[list[dict[str, Any]], float]:
    """Write n tickets of ~n/5 customers, their customer records and the search index; return the
    tickets' (id, phone, name, serial) samples and the seconds it took."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    customers = []
    for c in range(max(n // 5, 1)):
        phone = f"+86139{c:08d}"
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        (cid,) = identity.contact_customer_ids(email=None, phone=phone, key=KEY)
        customers.append((cid, phone, name))
    client = mongo(platform.infra)
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    try:
        db = client[platform.database("intake")]
        tickets = [_ticket(i, rng, customers[rng.randrange(len(customers))], now) for i in range(n)]
        tickets.sort(key=lambda t: t.created_at)
        names = {cid: name for cid, _, name in customers}
        for start in range(0, n, 2000):
            await db[TICKETS].insert_many(
                [document_of(t) for t in tickets[start : start + 2000]], ordered=False
            )
        for start in range(0, len(customers), 2000):
            await db[CUSTOMERS].insert_many(
                [
                    {"_id": cid, "name": name, "phone": phone, "channels": ["http:bench"], "version": 0}
                    for cid, phone, name in customers[start : start + 2000]
                ],
                ordered=False,
            )
        terms = [(t.id, seal(ticket_terms(document_of(t), names[t.customer_id]), KEY)) for t in tickets]
        await load_index(db, terms)
        phones = {cid: phone for cid, phone, _ in customers}
        for t in rng.sample(tickets, 200):
            samples.append(
                {
                    "id": t.id,
                    "phone": phones[t.customer_id],
                    "name": names[t.customer_id],
                    "serial": t.product["serial"],
                }
            )
    finally:
        await client.close()
    return samples, time.monotonic() - started


def _shapes(samples: list[dict[str, Any]]) -> dict[str, Callable[[int], dict[str, Any]]]:
    def pick(i: int) -> dict[str, Any]:
        return samples[i % len(samples)]

    return {
        "phone (typed without +86)": lambda i: {"phone": pick(i)["phone"][3:]},
        "customer name": lambda i: {"name": pick(i)["name"]},
        "ticket id": lambda i: {"ticket_id": pick(i)["id"]},
        "serial": lambda i: {"serial": pick(i)["serial"].lower()},
        "rare text (fault code)": lambda i: {"q": f"E{i % 99 + 1}"},
        "common text (device)": lambda i: {"q": DEVICES[i % len(DEVICES)]},
        "text + status filter": lambda i: {
            "q": DEVICES[i % len(DEVICES)] + FAULTS[i % len(FAULTS)],
            "status": "new",
        },
        "filters only (priority, region)": lambda i: {
            "priority": "P1",
            "region_code": REGIONS[i % len(REGIONS)],
        },
    }


async def _time(http: httpx.AsyncClient, url: str, params: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    r = await http.get(f"{url}/v1/search/tickets", params=params, headers=auth())
    r.raise_for_status()
    return time.perf_counter() - started, len(r.json()["items"])


def _pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": ordered[-1]}


async def search_stage(
    infra: Infra, processes: list[ServiceProcess], platforms: list[Platform], cfg: Config
) -> dict[str, Any]:
    platforms.append(platform := Platform(infra, processes))
    n = cfg.search_tickets
    say(f"search: creating intake's database, seeding {n:,} tickets with their search index")
    await platform.start_ready("intake")
    await stop_all(platform.services.values())
    samples, seeded_s = await _seed(platform, n)
    say(f"  seeded in {seeded_s:.0f} s; starting intake on it")
    await platform.start_ready("intake", **SERVICE_DEFAULTS)
    url = platform.url("intake")
    await wait_swept([url])  # steady state: not while FerretDB reads every ticket for the sweep
    shapes: dict[str, Any] = {}
    every: list[float] = []
    async with httpx.AsyncClient(timeout=30.0) as http:
        await _time(http, url, {"q": DEVICES[0]})  # warm the connection
        for label, params_of in _shapes(samples).items():
            times, hits = [], []
            for i in range(cfg.search_queries):
                seconds, count = await _time(http, url, params_of(i))
                times.append(seconds)
                hits.append(count)
            shapes[label] = {**_pcts(times), "hits_mean": statistics.fmean(hits)}
            every += times
            got = shapes[label]
            say(
                f"  {label:<32} p50 {got['p50'] * 1000:6.1f} ms  p99 {got['p99'] * 1000:6.1f} ms  "
                f"{got['hits_mean']:.1f} hits"
            )
    await stop_all(platform.services.values())
    return {"tickets": n, "seed_s": seeded_s, "queries": cfg.search_queries, "shapes": shapes, **_pcts(every)}


Stage = Callable[[Infra, list[ServiceProcess], list[Platform], Config], Awaitable[dict[str, Any]]]
