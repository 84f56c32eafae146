"""Routing's demo data for `make up` (seeded by `deploy/local/demo.py`; tests reuse `demo_calendar`):
Shanghai's central districts as service grids, with calendars, neighbours, a supervisor and technicians
of both tiers; Huangpu runs a grab-order pool (抢单) for installations, which `tech-demo` (the subject of
`dev-technician-token`) may claim. Pure data; the seeder PUTs it through the HTTP API in order (grids
first, each listing only neighbours defined before it; neighbourhood is symmetric)."""

from __future__ import annotations

from typing import Any

SHANGHAI = "310000"
CITY = "310100"
WORKDAY = [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}]
SATURDAY = [{"start": "09:00", "end": "12:00"}]
# The grid whose installations go to its grab-order pool (抢单) instead of automatic dispatch; an offer
# nobody claims within fallback_after_s is dispatched automatically.
POOL_GRID = "sh-huangpu"
POOL: dict[str, Any] = {"categories": ["installation"], "priorities": [], "fallback_after_s": 900}
DEMO_TECHNICIAN = "tech-demo"  # the subject of dev-technician-token: in POOL_GRID, skilled for all

# (grid id, name, district code, neighbours defined earlier, device types)
_DISTRICTS: list[tuple[str, str, str, list[str], list[str]]] = [
    ("sh-huangpu", "黄浦 Huangpu", "310101", [], []),
    ("sh-xuhui", "徐汇 Xuhui", "310104", ["sh-huangpu"], []),
    ("sh-jingan", "静安 Jing'an", "310106", ["sh-huangpu"], []),
    ("sh-pudong", "浦东 Pudong", "310115", ["sh-huangpu"], []),
    ("sh-pudong-lujiazui", "浦东 陆家嘴 Lujiazui", "310115/115005", ["sh-pudong"], []),
]


def demo_calendar() -> dict[str, Any]:
    """Return the grids' calendar: Mon-Fri with a lunch break, Saturday mornings, National Day off."""
    weekly: dict[str, list[dict[str, str]]] = {str(d): WORKDAY for d in range(5)}
    weekly["5"] = SATURDAY
    return {
        "timezone": "Asia/Shanghai",
        "weekly": weekly,
        "holidays": ["2026-10-01", "2026-10-02", "2026-10-05", "2027-01-01"],
        "extra_working_days": ["2026-10-10"],
        "extra_day_windows": WORKDAY,
    }


def demo_grids() -> list[dict[str, Any]]:
    """Return the grids in the order they must be created."""
    grids = []
    for gid, name, district, neighbours, devices in _DISTRICTS:
        # A street grid (Lujiazui, the densest part of Pudong) sits below its district's grid.
        path = [SHANGHAI, CITY, *district.split("/")]
        grids.append(
            {
                "id": gid,
                "name": name,
                "region_path": path,
                "device_types": devices,
                "calendar": demo_calendar(),
                "teams": [
                    {"id": f"{gid}-t1", "name": "一线 first line"},
                    {"id": f"{gid}-t2", "name": "专家 specialists"},
                ],
                "neighbours": neighbours,
                "supervisor_id": "supervisor-1",
                "surge": {"backlog_threshold": 8, "capacity_factor": 1.5, "automatic": True},
                "pool": POOL if gid == POOL_GRID else None,
            }
        )
    return grids


_TECHS = [
    # id, name, grid, tier, device types, categories, capacity
    (DEMO_TECHNICIAN, "Demo Technician", POOL_GRID, 1, [], [], 4),  # every device type and category
    ("tech-wang", "王师傅 Wang", "sh-huangpu", 1, ["air_conditioner", "washing_machine"], [], 3),
    ("tech-li", "李工 Li", "sh-huangpu", 2, [], [], 3),
    ("tech-zhang", "张师傅 Zhang", "sh-xuhui", 1, ["air_conditioner", "refrigerator"], [], 3),
    ("tech-chen", "陈师傅 Chen", "sh-xuhui", 1, [], ["installation", "usage_question", "hardware_fault"], 3),
    ("tech-zhao", "赵工 Zhao", "sh-xuhui", 2, [], [], 2),
    ("tech-sun", "孙师傅 Sun", "sh-jingan", 1, [], [], 3),
    ("tech-zhou", "周工 Zhou", "sh-jingan", 2, ["air_conditioner", "water_heater"], [], 2),
    ("tech-wu", "吴师傅 Wu", "sh-pudong", 1, [], [], 4),
    (
        "tech-zheng",
        "郑师傅 Zheng",
        "sh-pudong",
        1,
        ["washing_machine", "refrigerator", "water_heater"],
        [],
        3,
    ),
    ("tech-feng", "冯工 Feng", "sh-pudong", 2, [], ["hardware_fault", "software_fault"], 2),
    ("tech-xu", "徐师傅 Xu", "sh-pudong-lujiazui", 1, [], [], 3),
]


def demo_technicians() -> list[dict[str, Any]]:
    """Return the technicians (create after the grids)."""
    return [
        {
            "id": tid,
            "name": name,
            "grid_id": grid,
            "team_id": f"{grid}-t{tier}",
            "tier": tier,
            "device_types": devices,
            "categories": categories,
            "capacity": capacity,
            "on_duty": True,
        }
        for tid, name, grid, tier, devices, categories, capacity in _TECHS
    ]


def demo_data() -> dict[str, list[dict[str, Any]]]:
    """Return everything the seeder PUTs: {"grids": [...], "technicians": [...]} in creation order."""
    return {"grids": demo_grids(), "technicians": demo_technicians()}
