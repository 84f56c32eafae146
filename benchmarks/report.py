"""The results table (stdout and docs/benchmarks.md) and the machine facts printed beside it."""

from __future__ import annotations

import json
import math
import os
import platform as host
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import ROOT, Infra, mongo

from benchmarks.load import ms
from benchmarks.probes import infra_pids, process_name

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
SERVICES = ("intake", "routing", "followup", "feedback", "metrics")

R = dict[str, Any]
Getter = Callable[[R], tuple[str, float | None, bool | None]]  # (shown, key figure, meets target)


@dataclass
class Row:
    label: str
    target: str
    get: Getter
    higher_is_better: bool = True


def _get(r: R, *path: str) -> Any:
    for p in path:
        if not isinstance(r, dict) or p not in r:
            return None
        r = r[p]
    return r


def _mark(meets: bool | None) -> str:
    return "" if meets is None else (" ✓" if meets else " ✗")


def _lat(d: R | None) -> str:
    return " / ".join(ms(d[p]) for p in ("p50", "p95", "p99")) if d else "-"


def _rows(base: R) -> list[Row]:
    floor = _get(base, "floor", "rate") or 0.0
    rows = [
        Row("floor: plain aiokafka + PyMongo, tickets/s", "-", _floor),
        Row("five services: start to ready", "-", _startup, False),
    ]
    for clients in base.get("intake") or {}:
        rows.append(
            Row(
                f"intake, {clients} clients: tickets/s",
                "≥ floor" if clients == "32" else "-",
                _intake_rate(clients),
            )
        )
        rows.append(Row(f"intake, {clients} clients: p50 / p95 / p99", "-", _intake_lat(clients), False))
        rows.append(
            Row(f"intake, {clients} clients: errors, 2xx not stored", "0, 0", _intake_err(clients), False)
        )
    for step in _get(base, "e2e", "steps") or []:
        pct = step["pct"]
        target = "p99 ≤ 250 ms" if pct == 25 else "-"
        rows.append(
            Row(f"POST → assigned at {pct} % of floor: p50 / p95 / p99", target, _e2e_step(pct), False)
        )
    rows.append(
        Row("highest sustained rate (lag 0 within 10 s)", f"≥ {floor * 0.5:.1f}/s (50 %)", _sustained(floor))
    )
    rows.append(Row("KPI freshness at 25 % of floor: p50 / p99", "p99 ≤ 5 s", _kpi, False))
    rows.append(Row("IoT alerts consumed/s (storm collapse)", "≥ 5,000/s", _iot))
    rows.append(Row("IoT: alerts consumed, tickets made", "1 per device", _iot_tickets))
    rows.append(Row("idle CPU: database", "≤ 5 %", _cpu("database", 5.0), False))
    rows.append(Row("idle CPU: kafka", "-", _cpu("kafka", None), False))
    for s in SERVICES:
        rows.append(Row(f"idle CPU: {s}", "≤ 2 %", _cpu(s, 2.0), False))
    rows.append(Row("idle: whole machine busy", "-", _machine, False))
    for s in SERVICES:
        rows.append(Row(f"RSS {s}: idle / peak under load", "≤ 200 MB", _rss(s), False))
    for s in SERVICES:
        rows.append(Row(f"DB commands per ticket, {s} (not by _id)", "flat", _db(s), False))
    stored = _get(base, "search", "tickets")
    for shape in _get(base, "search", "shapes") or {}:
        rows.append(
            Row(f"search, {stored:,} stored, {shape}: p50 / p99", "p99 ≤ 200 ms", _search(shape), False)
        )
    return rows


def _search(shape: str) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        s = _get(r, "search", "shapes", shape)
        if not s:
            return ("-", None, None)
        return (f"{ms(s['p50'])} / {ms(s['p99'])} ({s['hits_mean']:.1f} hits)", s["p99"], s["p99"] <= 0.2)

    return get


def _floor(r: R) -> tuple[str, float | None, bool | None]:
    f = r.get("floor")
    return (
        (f"{f['rate']:.1f} ({f['tickets']} tickets, {f['workers']} workers)", f["rate"], None)
        if f
        else ("-", None, None)
    )


def _startup(r: R) -> tuple[str, float | None, bool | None]:
    s = r.get("startup_s")
    return (f"{s:.1f} s", s, None) if s is not None else ("-", None, None)


def _intake_rate(c: str) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        d, floor = _get(r, "intake", c), _get(r, "floor", "rate")
        if not d:
            return "-", None, None
        meets = d["rate"] >= floor if c == "32" and floor else None
        return f"{d['rate']:.1f}", d["rate"], meets

    return get


def _intake_lat(c: str) -> Getter:
    return lambda r: (_lat(_get(r, "intake", c)), _get(r, "intake", c, "p99"), None)


def _intake_err(c: str) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        d = _get(r, "intake", c)
        if not d:
            return "-", None, None
        return (
            f"{d['errors']}, {d['not_stored']} of {d['tickets']}",
            None,
            d["errors"] == 0 and d["not_stored"] == 0,
        )

    return get


def _e2e_step(pct: int) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        step = next((s for s in _get(r, "e2e", "steps") or [] if s["pct"] == pct), None)
        if not step:
            return "not run", None, None
        shown = f"{_lat(step)} at {step['rate']:.1f}/s" + ("" if step["sustained"] else " (not sustained)")
        return shown, step["p99"], (step["p99"] <= 0.25 if pct == 25 else None)

    return get


def _sustained(floor: float) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        e = r.get("e2e")
        if not e:
            return "-", None, None
        rate = e["sustained_rate"]
        return f"{rate:.1f}/s ({e['sustained_pct']} % of floor)", rate, rate >= 0.5 * floor if floor else None

    return get


def _kpi(r: R) -> tuple[str, float | None, bool | None]:
    k = r.get("kpi")
    if not k:
        return "-", None, None
    return f"{ms(k['p50'])} / {ms(k['p99'])} ({k['counted']} counted)", k["p99"], k["p99"] <= 5.0


def _iot(r: R) -> tuple[str, float | None, bool | None]:
    i = r.get("iot")
    return (f"{i['rate']:,.0f}", i["rate"], i["rate"] >= 5000) if i else ("-", None, None)


def _iot_tickets(r: R) -> tuple[str, float | None, bool | None]:
    i = r.get("iot")
    if not i:
        return "-", None, None
    shown = (
        f"{i['consumed']:,} of {i['alerts']:,} in {i['seconds']:.0f} s, "
        f"{i['tickets']} tickets ({i['devices']} devices)"
    )
    return shown, None, i["tickets"] == i["devices"] if i["finished"] else None


def _cpu(name: str, limit: float | None) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        v = _get(r, "idle", "cpu", name)
        if v is None:
            return "-", None, None
        return f"{v:.1f} %", v, (v <= limit if limit is not None else None)

    return get


def _machine(r: R) -> tuple[str, float | None, bool | None]:
    v = _get(r, "idle", "machine_busy_pct")
    if v is None:
        return "-", None, None
    drained = "" if _get(r, "idle", "drained") else " (platform not drained first)"
    return f"{v:.0f} % of {_get(r, 'idle', 'cores')} cores{drained}", None, None


def _rss(s: str) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        idle, peak = _get(r, "idle", "rss_mb", s), _get(r, "rss_peak_mb", s)
        if idle is None and peak is None:
            return "-", None, None
        shown = f"{idle or 0:.0f} / {peak or 0:.0f} MB"
        return shown, peak, (peak <= 200 if peak is not None else None)

    return get


def _db(s: str) -> Getter:
    def get(r: R) -> tuple[str, float | None, bool | None]:
        d = _get(r, "e2e", "db_per_ticket", s)
        if not d:
            return "-", None, None
        drained = "" if _get(r, "e2e", "db_drained") else " (not drained: undercounted)"
        return f"{d['commands']:.1f} ({d['not_by_id']:.1f}){drained}", d["commands"], None

    return get


def _ratio(row: Row, base: R, growth: R) -> str:
    _, b, _ = row.get(base)
    _, g, _ = row.get(growth)
    if b is None or g is None or any(math.isinf(x) or math.isnan(x) for x in (b, g)):
        return "-"
    if row.higher_is_better:
        return f"{g / b:.2f}" if b > 0 else "-"
    return f"{b / g:.2f}" if g > 0 else ("1.00" if b == 0 else "-")


def table(base: R, growth: R | None) -> str:
    head = ["figure", "target", "fresh platform"]
    if growth:
        seeded = growth.get("seed", {}).get("tickets")
        head += [f"{seeded:,} tickets stored" if seeded else "growth run", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in _rows(base):
        shown, _, meets = row.get(base)
        if shown == "-" and (not growth or row.get(growth)[0] == "-"):
            continue  # a stage that was not run
        cells = [row.label, row.target, shown + _mark(meets)]
        if growth:
            g_shown, _, g_meets = row.get(growth)
            cells += [g_shown + _mark(g_meets), _ratio(row, base, growth)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def machine_facts(infra: Infra) -> dict[str, str]:
    facts = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": str(os.cpu_count())}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()  # noqa: ASYNC240 (a small file, once)
        facts["cpu"] = next(
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
        )
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]  # noqa: ASYNC240
        facts["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, TypeError):
        pass
    facts["kernel"] = host.release()
    facts["python"] = host.python_version()
    pom = (ROOT / "deploy" / "local" / "kafka" / "pom.xml").read_text()
    if m := re.search(r"<kafka.version>(.*?)</kafka.version>", pom):
        facts["kafka"] = f"Apache Kafka {m[1]} (single node, KRaft)"
    client = mongo(infra)
    try:
        info = await client.admin.command("buildInfo")
        db = f"MongoDB wire {info.get('version')}"
        if "ferretdbVersion" in info:
            version = info["ferretdbVersion"]
            gomod = (ROOT / "deploy" / "local" / "ferretdb" / "go.mod").read_text()
            if version == "unknown" and (m := re.search(r"github.com/FerretDB/FerretDB (v[0-9.]+)", gomod)):
                version = m[1]
            db = (
                f"FerretDB {version} on SQLite via deploy/local/ferretdb (wire version {info.get('version')})"
            )
        pid = infra_pids().get("database")
        facts["database"] = db + (f", process {process_name(pid)}" if pid else "")
    except Exception as exc:
        facts["database"] = f"unknown ({exc!r:.80})"
    finally:
        await client.close()
    return facts


def render(facts: dict[str, str], command: str, body: str, notes: list[str]) -> str:
    lines = [
        f"Measured {facts.get('date')} with `{command}` on {facts.get('cores')} cores "
        f"({facts.get('cpu', '?')}), {facts.get('memory', '?')} memory, Linux {facts.get('kernel')}, "
        f"Python {facts.get('python')}; {facts.get('kafka', 'Kafka ?')}; {facts.get('database', '?')}.",
        "",
        body,
        "",
        *(f"- {n}" for n in notes),
    ]
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")


def save_json(results: dict[str, Any]) -> Path:
    out = ROOT / ".bench"
    out.mkdir(exist_ok=True)
    path = out / f"results-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(results, indent=2, default=str, allow_nan=True))
    return path
