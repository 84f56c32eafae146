"""What one ticket's facts contribute to the KPI rollups, and the delta between two versions of them.

Rollups are integer counters in buckets: one bucket per calendar day (in the KPI time zone) keyed
`(dimension, value, counter)`, plus `current` (the backlog and other "now" gauges) and `alltime` (the
low-cardinality series Prometheus scrapes). A ticket's contribution is a pure function of its facts, so
when the facts change the rollups move by `contribution(new) - contribution(old)`: redelivered events
change nothing and late events correct exactly what they touch. Durations are kept in milliseconds so
every sum is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from aftersales.metrics.facts import Facts, location_grid, location_technician, paused_seconds

DIMENSIONS = ("all", "grid", "team", "technician", "channel", "category", "priority", "product")
# Upper bounds of the duration histograms Prometheus sees, in seconds.
DURATION_BUCKETS_S = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
CURRENT = "current"
ALLTIME = "alltime"

Counters = dict[str, int]
# bucket id -> path ("dimension|value|counter" for day/current buckets, "series|labels..." for alltime)
Contribution = dict[str, Counters]


def day_bucket(at: datetime, zone: ZoneInfo) -> str:
    return f"d:{at.astimezone(zone).date().isoformat()}"


def _ms(a: datetime, b: datetime) -> int:
    return max(round((b - a).total_seconds() * 1000), 0)


def dimension_values(f: Facts, technician: str | None = None) -> dict[str, str]:
    """Return the value of every KPI dimension for this ticket ("unknown" / "unassigned" when not known)."""
    return {
        "all": "all",
        "grid": f.grid or "unassigned",
        "team": f.team or "none",
        "technician": technician or f.technician or "unassigned",
        "channel": f.channel or "unknown",
        "category": f.category or "unknown",
        "priority": f.priority or "unknown",
        "product": f.product or "unknown",
    }


class _Builder:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.out: dict[str, Counters] = defaultdict(lambda: defaultdict(int))

    def add(self, bucket: str, dims: dict[str, str], counters: dict[str, int]) -> None:
        target = self.out[bucket]
        for dim, value in dims.items():
            for name, amount in counters.items():
                if amount:
                    target[f"{dim}|{value}|{name}"] += amount

    def at(self, when: datetime, dims: dict[str, str], counters: dict[str, int]) -> None:
        self.add(day_bucket(when, self.zone), dims, counters)

    def series(self, name: str, labels: Iterable[str], amount: int = 1) -> None:
        if amount:
            self.out[ALLTIME]["|".join([name, *labels])] += amount

    def histogram(self, name: str, label: str, seconds_ms: int) -> None:
        le = next((str(b) for b in DURATION_BUCKETS_S if seconds_ms <= b * 1000), "inf")
        self.series(name, [label, "le", le])
        self.series(name, [label, "sum_ms"], seconds_ms)
        self.series(name, [label, "count"])

    def result(self) -> Contribution:
        return {b: {k: v for k, v in c.items() if v} for b, c in self.out.items() if any(c.values())}


def contribution(f: Facts, zone: ZoneInfo) -> Contribution:
    """Return every counter this ticket adds to the rollups, by bucket."""
    b = _Builder(zone)
    dims = dimension_values(f)
    if f.is_ticket and f.created_at is not None:
        _ticket(b, f, dims)
    for s in f.surveys:
        sdims = dimension_values(f, s.technician_id)
        counters = {"surveys": 1, "csat_sum": s.csat, f"csat_{s.csat}": 1}
        if s.nps is not None:
            counters.update(nps_responses=1, promoters=int(s.nps >= 9), detractors=int(s.nps <= 6))
        b.at(s.submitted_at, sdims, counters)
        b.series("csat", [sdims["grid"], str(s.csat)])
        if s.nps is not None:
            group = "promoter" if s.nps >= 9 else "detractor" if s.nps <= 6 else "passive"
            b.series("nps", [sdims["grid"], group])
    for c in f.complaints:
        cdims = dict(dims, category=c.category or dims["category"])
        if c.opened_at is not None:
            closed = c.closed_at is not None
            b.at(
                c.opened_at,
                cdims,
                {
                    "complaints": 1,
                    "complaints_closed": int(closed),
                    "complaints_closed_in_time": int(closed and bool(c.within_deadline)),
                    "complaints_escalated": int(c.escalated),
                },
            )
            b.series("complaints_opened", [c.scope or "individual"])
            if not closed:
                b.add(CURRENT, cdims, {"open_complaints": 1})
    for v in f.visits:
        if v.scheduled_at is not None:
            b.at(
                v.scheduled_at,
                dims,
                {
                    "followups_scheduled": 1,
                    "followups_completed": int(v.completed_at is not None),
                    "followups_confirmed": int(v.outcome == "confirmed_resolved"),
                    "followups_missed": int(v.missed_at is not None and v.completed_at is None),
                    "followups_cancelled": int(v.cancelled_at is not None and v.completed_at is None),
                },
            )
        if v.completed_at is not None and v.outcome is not None:
            b.series("followups_completed", [v.kind, v.outcome])
        if v.scheduled_at is not None and not v.done:
            b.add(CURRENT, dims, {"pending_followups": 1})
    _field_visits(b, f)
    _stock(b, f)
    if f.is_ticket and f.first_resolved_at is not None:
        _field_resolution(b, f, f.first_resolved_at)
    return b.result()


def _field_visits(b: _Builder, f: Facts) -> None:
    """On-site appointments (fieldwork), each counted for the technician it names: kept (checked in) or
    missed (a no-show) on the day it concluded, travel time at check-in, work time at check-out."""
    for v in f.field_visits:
        vdims = dimension_values(f, v.technician_id)
        grid = vdims["grid"]
        if v.checked_in_at is not None:
            travel = {"travel_legs": 1, "travel_ms": v.travel_s * 1000} if v.travel_s is not None else {}
            b.at(v.checked_in_at, vdims, {"appointments_concluded": 1, "appointments_kept": 1, **travel})
            b.series("field_appointments", [grid, "kept"])
            if v.travel_s is not None:
                b.histogram("field_travel", grid, v.travel_s * 1000)
        elif v.no_show_at is not None:
            absent = v.absent or "customer"
            b.at(v.no_show_at, vdims, {"appointments_concluded": 1, f"appointments_no_show_{absent}": 1})
            b.series("field_appointments", [grid, f"no_show_{absent}"])
        if v.checked_out_at is not None:
            b.at(v.checked_out_at, vdims, {"field_visits": 1, "work_ms": (v.work_s or 0) * 1000})
            b.series("field_visits", [grid])
            b.histogram("field_work", grid, (v.work_s or 0) * 1000)


def _stock(b: _Builder, f: Facts) -> None:
    """Parts consumed (on the day they left the stock, less those given back) and low-stock alerts, by
    the grid of the stock location: a warehouse's own grid; a van's parts take their ticket's grid, a van's
    alert `unknown` (metrics keeps no technician's grid). Consumption counts in every dimension of its
    ticket (technician: the van's, else the ticket's); an alert only for `all`, its grid and a van's
    technician."""
    for p in f.parts:
        if not p.used or p.consumed_at is None:
            continue
        grid = location_grid(p.location_id, f.grid)
        pdims = dict(dimension_values(f, location_technician(p.location_id)), grid=grid)
        counters = {"parts_consumed": p.used}
        if p.unit_cost_cents is not None:
            cost = p.used * p.unit_cost_cents
            counters.update(parts_consumed_costed=p.used, parts_consumed_cost_cents=cost)
        b.at(p.consumed_at, pdims, counters)
        b.series("parts_consumed", [grid], p.used)
    if f.stock_low is not None:
        a = f.stock_low
        grid = location_grid(a.location_id, None)
        adims = {"all": "all", "grid": grid}
        technician = location_technician(a.location_id)
        if technician is not None:
            adims["technician"] = technician
        b.at(a.at, adims, {"stock_low_alerts": 1})
        b.series("stock_low", [grid])


def _field_resolution(b: _Builder, f: Facts, resolved_at: datetime) -> None:
    """A resolved ticket with at least one visit checked out, on the day of its first resolution, counted
    for the technician of its first visit: a first-time fix when exactly one visit was checked out over
    the ticket's life, and the parts its reports used (their cost when every line has a unit cost)."""
    done = sorted(
        (v for v in f.field_visits if v.checked_out_at is not None),
        key=lambda v: (v.checked_out_at, v.appointment_id),
    )
    if not done:
        return
    rdims = dimension_values(f, done[0].technician_id)
    first_time = len(done) == 1
    counters = {
        "field_resolved": 1,
        "first_time_fixed": int(first_time),
        "parts_used": sum(p.used for p in f.parts),
    }
    kept = [p for p in f.parts if p.used]  # a line whose parts all came back costs nothing
    costs = [p.unit_cost_cents * p.used for p in kept if p.unit_cost_cents is not None]
    if len(costs) == len(kept):
        counters.update(parts_costed_resolved=1, parts_cost_cents=sum(costs))
        b.series("field_parts_costed", [rdims["grid"]])
        b.series("field_parts_cost_cents", [rdims["grid"]], sum(costs))
    b.at(resolved_at, rdims, counters)
    b.series("field_resolutions", [rdims["grid"], "first_time" if first_time else "repeat"])


def _ticket(b: _Builder, f: Facts, dims: dict[str, str]) -> None:
    assert f.created_at is not None
    created = f.created_at
    breached_response = "first_response" in f.breached_clocks
    breached_resolution = "resolution" in f.breached_clocks
    responded = f.first_response_at is not None
    resolved = f.first_resolved_at is not None
    counters = {
        "created": 1,
        "cancelled": int(f.cancelled_at is not None),
        "escalated": int(f.escalated),
        "merged_alerts": f.merged_alerts,
        "resolved_of_created": int(resolved),
        "assigned": int(f.first_assigned_at is not None),
        "responded": int(responded),
        "response_concluded": int(responded or breached_response),
        "response_breached": int(breached_response),
        "resolution_concluded": int(resolved or breached_resolution),
        "resolution_breached": int(breached_resolution),
    }
    if f.first_assigned_at is not None:
        counters["assign_ms"] = _ms(created, f.first_assigned_at)
    if f.first_response_at is not None:
        wall = _ms(created, f.first_response_at)
        counters["response_ms"] = max(wall - round(paused_seconds(f, f.first_response_at) * 1000), 0)
    b.at(created, dims, counters)
    b.series("created", [dims["channel"], dims["category"], dims["priority"]])
    for clock in f.breached_clocks:
        b.series("sla_breaches", [clock, dims["grid"]])
    if f.first_assigned_at is not None:
        b.histogram("assignment_latency", dims["priority"], counters["assign_ms"])
    if f.first_response_at is not None:
        b.histogram("first_response", dims["priority"], counters["response_ms"])
    if f.first_resolved_at is not None:
        wall = _ms(created, f.first_resolved_at)
        net = max(wall - round(paused_seconds(f, f.first_resolved_at) * 1000), 0)
        first_contact = not f.escalated and f.reopen_count == 0
        b.at(
            f.first_resolved_at,
            dims,
            {
                "resolved": 1,
                "resolution_ms": wall,
                "resolution_net_ms": net,
                "first_contact_resolved": int(first_contact),
                "reopened": int(f.reopen_count > 0),
                "reopens": f.reopen_count,
            },
        )
        b.series("resolved", [dims["category"], dims["priority"]])
        b.histogram("resolution", dims["priority"], wall)
    if f.is_open:
        b.add(CURRENT, dims, {"open": 1, "waiting_customer": int(_waiting(f))})


def _waiting(f: Facts) -> bool:
    last_pause = max(f.pauses, default=None)
    last_resume = max(f.resumes, default=None)
    return last_pause is not None and (last_resume is None or last_pause > last_resume)


def delta(old: Contribution, new: Contribution) -> Contribution:
    """Return new - old, bucket by bucket, without zero entries."""
    out: Contribution = {}
    for bucket in {*old, *new}:
        before, after = old.get(bucket, {}), new.get(bucket, {})
        diff = {k: after.get(k, 0) - before.get(k, 0) for k in {*before, *after}}
        diff = {k: v for k, v in diff.items() if v}
        if diff:
            out[bucket] = diff
    return out


def sum_changes(changes: Sequence[Contribution]) -> Contribution:
    """Return the bucket-by-bucket sum of several deltas, without zero entries."""
    total: dict[str, dict[str, int]] = {}
    for change in changes:
        for bucket, counters in change.items():
            target = total.setdefault(bucket, {})
            for key, n in counters.items():
                target[key] = target.get(key, 0) + n
    return {b: {k: n for k, n in c.items() if n} for b, c in total.items() if any(c.values())}
