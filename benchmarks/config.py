"""Sizes of every benchmark stage, from BENCH_* environment variables (BENCH_QUICK=1: every stage tiny)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

# name: (default, BENCH_QUICK=1 default, meaning)
KNOBS: dict[str, tuple[str, str, str]] = {
    "FLOOR_TICKETS": ("1000", "200", "tickets of the bare-I/O floor (closed loop)"),
    "FLOOR_WORKERS": ("4", "4", "concurrent workers of the floor"),
    "FLOOR_MAX_S": ("60", "20", "time bound of the floor"),
    "FLOOR_RATE": ("", "", "skip the floor and use this rate (tickets/s) for the stages sized by it"),
    "INTAKE_TICKETS": ("500", "40", "tickets POSTed per intake closed loop"),
    "INTAKE_CLIENTS": ("8,32", "8,32", "client counts of the intake closed loops"),
    "INTAKE_MAX_S": ("90", "20", "time bound of each intake closed loop"),
    "E2E_DURATION_S": ("60", "5", "seconds of load per end-to-end step"),
    "E2E_STEPS": ("25,50,75,100", "25,50,100", "offered rates in % of the floor"),
    "LAG_WINDOW_S": ("10", "10", "a step is sustained when every group is at lag 0 within this"),
    "DRAIN_MAX_S": ("120", "20", "how long to wait for the platform to drain between stages"),
    "KPI_DURATION_S": ("30", "5", "seconds of load of the KPI freshness stage (25 % of the floor)"),
    "KPI_WAIT_S": ("60", "15", "how long to wait for the last ticket to be counted"),
    "KPI_POLL_S": ("0.25", "0.25", "GET /v1/kpis interval"),
    "IOT_ALERTS": ("100000", "2000", "alerts published to the requests topic"),
    "IOT_DEVICES": ("500", "50", "devices the alerts come from (one fault code each)"),
    "IOT_MAX_S": ("120", "20", "time bound of the alert stage (what was consumed by then counts)"),
    "IDLE_S": ("60", "5", "seconds of the idle measurement"),
    "GROWTH_TICKETS": ("100000", "1000", "tickets of history seeded before the growth run"),
    "GROWTH_TEMPLATES": ("20", "3", "closed tickets run through the platform and cloned as history"),
    "GROWTH_DAYS": ("90", "90", "the seeded history is spread over this many past days"),
    "SEED_CHUNK": ("2000", "1000", "documents per insert_many while seeding"),
    "SEARCH_TICKETS": ("100000", "2000", "tickets (with their search index) seeded for the search stage"),
    "SEARCH_QUERIES": ("30", "5", "searches timed per query shape"),
    "WRITE_DOCS": ("1", "0", "write docs/benchmarks.md (0: print only)"),
    "KEEP_DATA": ("0", "0", "keep the benchmark's databases afterwards (1) instead of dropping them"),
}


def _raw(name: str, quick: bool) -> str:
    default, quick_default, _ = KNOBS[name]
    return os.environ.get(f"BENCH_{name}", quick_default if quick else default)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.replace(" ", "").split(",") if x)


@dataclass(frozen=True)
class Config:
    quick: bool
    floor_tickets: int
    floor_workers: int
    floor_max_s: float
    floor_rate: float | None
    intake_tickets: int
    intake_clients: tuple[int, ...]
    intake_max_s: float
    e2e_duration_s: float
    e2e_steps: tuple[int, ...]
    lag_window_s: float
    drain_max_s: float
    kpi_duration_s: float
    kpi_wait_s: float
    kpi_poll_s: float
    iot_alerts: int
    iot_devices: int
    iot_max_s: float
    idle_s: float
    growth_tickets: int
    growth_templates: int
    growth_days: float
    seed_chunk: int
    search_tickets: int
    search_queries: int
    write_docs: bool
    keep_data: bool

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("BENCH_QUICK", "0") not in ("", "0", "false")
        r = {name: _raw(name, quick) for name in KNOBS}
        return cls(
            quick=quick,
            floor_tickets=int(r["FLOOR_TICKETS"]),
            floor_workers=int(r["FLOOR_WORKERS"]),
            floor_max_s=float(r["FLOOR_MAX_S"]),
            floor_rate=float(r["FLOOR_RATE"]) if r["FLOOR_RATE"] else None,
            intake_tickets=int(r["INTAKE_TICKETS"]),
            intake_clients=_ints(r["INTAKE_CLIENTS"]),
            intake_max_s=float(r["INTAKE_MAX_S"]),
            e2e_duration_s=float(r["E2E_DURATION_S"]),
            e2e_steps=_ints(r["E2E_STEPS"]),
            lag_window_s=float(r["LAG_WINDOW_S"]),
            drain_max_s=float(r["DRAIN_MAX_S"]),
            kpi_duration_s=float(r["KPI_DURATION_S"]),
            kpi_wait_s=float(r["KPI_WAIT_S"]),
            kpi_poll_s=float(r["KPI_POLL_S"]),
            iot_alerts=int(r["IOT_ALERTS"]),
            iot_devices=int(r["IOT_DEVICES"]),
            iot_max_s=float(r["IOT_MAX_S"]),
            idle_s=float(r["IDLE_S"]),
            growth_tickets=int(r["GROWTH_TICKETS"]),
            growth_templates=int(r["GROWTH_TEMPLATES"]),
            growth_days=float(r["GROWTH_DAYS"]),
            seed_chunk=int(r["SEED_CHUNK"]),
            search_tickets=int(r["SEARCH_TICKETS"]),
            search_queries=int(r["SEARCH_QUERIES"]),
            write_docs=r["WRITE_DOCS"] not in ("", "0", "false"),
            keep_data=r["KEEP_DATA"] not in ("", "0", "false"),
        )

    def overrides(self) -> list[str]:
        """The BENCH_* variables set in the environment (for the exact command in the report)."""
        names = ["QUICK", *KNOBS]
        return [f"BENCH_{n}={os.environ[f'BENCH_{n}']}" for n in names if f"BENCH_{n}" in os.environ]


def help_text() -> str:
    width = max(len(n) for n in KNOBS) + 6
    lines = [f"  {'BENCH_QUICK':<{width}} 1: every stage tiny (smoke check, ~3 min; does not write docs)"]
    for name, (default, quick, meaning) in KNOBS.items():
        lines.append(
            f"  {'BENCH_' + name:<{width}} {meaning} [default {default or '-'}, quick {quick or '-'}]"
        )
    return "\n".join(lines)


assert {f.name for f in fields(Config)} == {"quick", *(n.lower() for n in KNOBS)}
