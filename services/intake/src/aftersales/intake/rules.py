"""Classification and priority rules as data (a versioned document) and the small pure engine that reads it.

Category: the caller's hint wins, else the first matching rule, else `other`.
Priority: the category's base level, then every matching adjustment in order (`raise`/`lower` by steps,
`at_least`/`at_most` a level), then the caller's priority hint, which may raise but never lower it.
Change a rule = change this document and bump `version`; every ticket records the version that set it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aftersales.shared.contracts.common import Category, Channel, CustomerTier, Priority
from aftersales.shared.contracts.requests import TicketRequest

RULES: dict[str, Any] = {
    "version": "2026.11-2",
    "category_rules": [
        {
            "id": "iot-software-fault",
            "when": {"channel_in": ["iot"], "fault_code_prefix_any": ["SW", "FW"]},
            "category": "software_fault",
        },
        {"id": "iot-hardware-fault", "when": {"channel_in": ["iot"]}, "category": "hardware_fault"},
        {
            "id": "kw-complaint",
            "when": {"keywords_any": ["complaint", "complain", "投诉", "unacceptable"]},
            "category": "complaint",
        },
        {
            "id": "kw-return-refund",
            "when": {"keywords_any": ["refund", "return", "money back", "退货", "退款", "换货"]},
            "category": "return_refund",
        },
        {
            "id": "kw-safety",
            "when": {
                "keywords_any": [
                    "smoke",
                    "fire",
                    "burning",
                    "electric shock",
                    "sparks",
                    "冒烟",
                    "起火",
                    "漏电",
                ]
            },
            "category": "hardware_fault",
        },
        {
            "id": "kw-installation",
            "when": {"keywords_any": ["install", "installation", "mount", "安装"]},
            "category": "installation",
        },
        {
            "id": "kw-software",
            "when": {
                "keywords_any": [
                    "app",
                    "firmware",
                    "software",
                    "update",
                    "wifi",
                    "error code",
                    "crash",
                    "软件",
                    "固件",
                ]
            },
            "category": "software_fault",
        },
        {
            "id": "kw-hardware",
            "when": {
                "keywords_any": [
                    "broken",
                    "not working",
                    "does not work",
                    "leak",
                    "noise",
                    "won't turn on",
                    "no power",
                    "cracked",
                    "not cooling",
                    "not heating",
                    "warm air",
                    "stopped working",
                    "won't start",
                    "overheat",
                    "error code",
                    "故障",
                    "坏了",
                    "漏水",
                    "不制冷",
                    "不工作",
                ]
            },
            "category": "hardware_fault",
        },
        {
            "id": "kw-usage",
            "when": {
                "keywords_any": ["how to", "how do i", "how can i", "manual", "setting", "怎么", "如何"]
            },
            "category": "usage_question",
        },
    ],
    "default_category": "other",
    "base_priority": {
        "hardware_fault": "P3",
        "software_fault": "P3",
        "usage_question": "P4",
        "installation": "P3",
        "return_refund": "P3",
        "complaint": "P2",
        "other": "P4",
    },
    "priority_rules": [
        {
            "id": "safety-hazard",
            "when": {
                "keywords_any": [
                    "smoke",
                    "fire",
                    "burning",
                    "electric shock",
                    "sparks",
                    "冒烟",
                    "起火",
                    "漏电",
                ]
            },
            "at_least": "P1",
        },
        {"id": "iot-critical", "when": {"channel_in": ["iot"], "severity_gte": 5}, "at_least": "P1"},
        {"id": "iot-major", "when": {"channel_in": ["iot"], "severity_gte": 4}, "at_least": "P2"},
        {"id": "key-account", "when": {"tier_in": ["key_account"]}, "raise": 1},
        {"id": "gold-floor", "when": {"tier_in": ["gold"]}, "at_least": "P3"},
        {
            "id": "fault-in-warranty",
            "when": {"under_warranty": True, "category_in": ["hardware_fault", "software_fault"]},
            "raise": 1,
        },
        {
            "id": "question-out-of-warranty",
            "when": {"under_warranty": False, "category_in": ["usage_question"]},
            "at_most": "P4",
        },
        # caps come last so no raise above can lift a minor alert over them
        {"id": "iot-minor", "when": {"channel_in": ["iot"], "severity_lte": 2}, "at_most": "P3"},
    ],
}

_LEVELS = [Priority.P1, Priority.P2, Priority.P3, Priority.P4]


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at, derived from a request."""

    channel: Channel
    text: str
    device_type: str
    tier: CustomerTier
    under_warranty: bool | None
    fault_code: str | None
    severity: int | None
    category_hint: Category | None = None
    priority_hint: Priority | None = None

    @classmethod
    def of(cls, request: TicketRequest, *, under_warranty: bool | None) -> Facts:
        return cls(
            channel=request.channel,
            text=f"{request.title}\n{request.description}".lower(),
            device_type=request.product.device_type,
            tier=request.customer.tier,
            under_warranty=under_warranty,
            fault_code=request.iot.fault_code if request.iot else None,
            severity=request.iot.severity if request.iot else None,
            category_hint=request.category_hint,
            priority_hint=request.priority_hint,
        )


@dataclass(frozen=True, slots=True)
class Classification:
    category: Category
    priority: Priority
    rules_version: str
    matched: tuple[str, ...]


def matches(when: Mapping[str, Any], facts: Facts, category: Category | None = None) -> bool:
    """Return True when every condition of a rule holds for `facts` (and the category, once known)."""
    return all(_condition(name, expected, facts, category) for name, expected in when.items())


def _condition(name: str, expected: Any, facts: Facts, category: Category | None) -> bool:
    if name == "channel_in":
        return facts.channel.value in expected
    if name == "keywords_any":
        return any(word.lower() in facts.text for word in expected)
    if name == "device_type_in":
        return facts.device_type in expected
    if name == "tier_in":
        return facts.tier.value in expected
    if name == "under_warranty":
        return facts.under_warranty is expected
    if name == "fault_code_prefix_any":
        return facts.fault_code is not None and facts.fault_code.upper().startswith(tuple(expected))
    if name == "severity_gte":
        return facts.severity is not None and facts.severity >= expected
    if name == "severity_lte":
        return facts.severity is not None and facts.severity <= expected
    if name == "category_in":
        return category is not None and category.value in expected
    raise ValueError(f"unknown rule condition {name!r}")


def classify(facts: Facts, rules: Mapping[str, Any] = RULES) -> Classification:
    """Return the category, priority and the ids of the rules that decided them."""
    matched: list[str] = []
    if facts.category_hint is not None:
        category = facts.category_hint
        matched.append("category-hint")
    else:
        category = Category(rules["default_category"])
        for rule in rules["category_rules"]:
            if matches(rule["when"], facts):
                category = Category(rule["category"])
                matched.append(rule["id"])
                break
    level = _LEVELS.index(Priority(rules["base_priority"][category.value]))
    for rule in rules["priority_rules"]:
        if not matches(rule["when"], facts, category):
            continue
        matched.append(rule["id"])
        if "raise" in rule:
            level -= int(rule["raise"])
        if "lower" in rule:
            level += int(rule["lower"])
        if "at_least" in rule:
            level = min(level, _LEVELS.index(Priority(rule["at_least"])))
        if "at_most" in rule:
            level = max(level, _LEVELS.index(Priority(rule["at_most"])))
        level = max(0, min(level, len(_LEVELS) - 1))
    if facts.priority_hint is not None and _LEVELS.index(facts.priority_hint) < level:
        level = _LEVELS.index(facts.priority_hint)
        matched.append("priority-hint")
    return Classification(category, _LEVELS[level], str(rules["version"]), tuple(matched))


def validate_rules(rules: Mapping[str, Any]) -> None:
    """Raise ValueError when the rules document refers to unknown categories, levels or conditions."""
    probe = Facts(Channel.WEB, "", "x", CustomerTier.STANDARD, None, None, None)
    for rule in [*rules["category_rules"], *rules["priority_rules"]]:
        matches(rule["when"], probe, Category.OTHER)
        if "category" in rule:
            Category(rule["category"])
        for key in ("at_least", "at_most"):
            if key in rule:
                Priority(rule[key])
    for category, level in rules["base_priority"].items():
        Category(category), Priority(level)
    missing = {c.value for c in Category} - set(rules["base_priority"])
    if missing:
        raise ValueError(f"base_priority misses {sorted(missing)}")
