"""The classification and priority rule table, case by case."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aftersales.intake.rules import RULES, Facts, classify, validate_rules
from aftersales.shared.contracts.common import Category, Priority
from aftersales.shared.contracts.requests import TicketRequest


def request(**overrides: Any) -> TicketRequest:
    body: dict[str, Any] = {
        "channel": "web",
        "customer": {"name": "Han Meimei", "email": "han@example.com", "region_code": "310000"},
        "product": {"device_type": "washer"},
        "title": "Question",
        "description": "",
    }
    for key, value in overrides.items():
        if key in ("customer", "product"):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return TicketRequest.model_validate(body)


def iot(fault_code: str, severity: int) -> dict[str, Any]:
    return {
        "channel": "iot",
        "product": {"device_type": "chiller", "serial": "SN-9"},
        "iot": {"fault_code": fault_code, "severity": severity, "observed_at": datetime.now(UTC).isoformat()},
    }


# (case id, request overrides, under_warranty, expected category, expected priority, a rule that must fire)
CASES: list[tuple[str, dict[str, Any], bool | None, Category, Priority, str | None]] = [
    ("nothing-matches", {"title": "Hello"}, None, Category.OTHER, Priority.P4, None),
    (
        "usage-question",
        {"title": "How to set the timer?"},
        None,
        Category.USAGE_QUESTION,
        Priority.P4,
        "kw-usage",
    ),
    ("usage-chinese", {"title": "定时功能怎么用"}, None, Category.USAGE_QUESTION, Priority.P4, "kw-usage"),
    (
        "hardware-out-of-warranty",
        {"title": "Drum is broken"},
        False,
        Category.HARDWARE_FAULT,
        Priority.P3,
        "kw-hardware",
    ),
    (
        "hardware-not-cooling",
        {"title": "Air conditioner not cooling", "description": "blows warm air"},
        False,
        Category.HARDWARE_FAULT,
        Priority.P3,
        "kw-hardware",
    ),
    (
        "hardware-in-warranty",
        {"title": "Drum is broken"},
        True,
        Category.HARDWARE_FAULT,
        Priority.P2,
        "fault-in-warranty",
    ),
    (
        "software",
        {"title": "App shows an error code"},
        None,
        Category.SOFTWARE_FAULT,
        Priority.P3,
        "kw-software",
    ),
    (
        "installation",
        {"title": "Need installation"},
        None,
        Category.INSTALLATION,
        Priority.P3,
        "kw-installation",
    ),
    ("refund", {"title": "I want a refund"}, None, Category.RETURN_REFUND, Priority.P3, "kw-return-refund"),
    (
        "complaint",
        {"title": "Complaint about the technician"},
        None,
        Category.COMPLAINT,
        Priority.P2,
        "kw-complaint",
    ),
    ("complaint-chinese", {"title": "我要投诉"}, None, Category.COMPLAINT, Priority.P2, "kw-complaint"),
    (
        "safety-smoke",
        {"title": "Smoke from the back"},
        None,
        Category.HARDWARE_FAULT,
        Priority.P1,
        "safety-hazard",
    ),
    ("safety-chinese", {"title": "机器冒烟"}, False, Category.HARDWARE_FAULT, Priority.P1, "safety-hazard"),
    (
        "key-account-raises",
        {"title": "Drum is broken", "customer": {"tier": "key_account"}},
        False,
        Category.HARDWARE_FAULT,
        Priority.P2,
        "key-account",
    ),
    (
        "key-account-and-warranty",
        {"title": "Drum is broken", "customer": {"tier": "key_account"}},
        True,
        Category.HARDWARE_FAULT,
        Priority.P1,
        "key-account",
    ),
    (
        "gold-floor",
        {"title": "Hello", "customer": {"tier": "gold"}},
        None,
        Category.OTHER,
        Priority.P3,
        "gold-floor",
    ),
    (
        "question-out-of-warranty-stays-low",
        {"title": "How to clean it", "customer": {"tier": "key_account"}},
        False,
        Category.USAGE_QUESTION,
        Priority.P4,
        "question-out-of-warranty",
    ),
    ("iot-critical", iot("E101", 5), None, Category.HARDWARE_FAULT, Priority.P1, "iot-critical"),
    ("iot-major", iot("E101", 4), None, Category.HARDWARE_FAULT, Priority.P2, "iot-major"),
    ("iot-normal", iot("E101", 3), None, Category.HARDWARE_FAULT, Priority.P3, "iot-hardware-fault"),
    ("iot-minor-capped", iot("E101", 1), True, Category.HARDWARE_FAULT, Priority.P3, "iot-minor"),
    ("iot-software", iot("SW-7", 3), None, Category.SOFTWARE_FAULT, Priority.P3, "iot-software-fault"),
    (
        "iot-firmware-lowercase",
        iot("fw12", 3),
        None,
        Category.SOFTWARE_FAULT,
        Priority.P3,
        "iot-software-fault",
    ),
    (
        "category-hint-wins",
        {"title": "Drum is broken", "category_hint": "installation"},
        None,
        Category.INSTALLATION,
        Priority.P3,
        "category-hint",
    ),
    (
        "priority-hint-raises",
        {"title": "Hello", "priority_hint": "P2"},
        None,
        Category.OTHER,
        Priority.P2,
        "priority-hint",
    ),
    (
        "priority-hint-never-lowers",
        {"title": "Smoke!", "priority_hint": "P4"},
        None,
        Category.HARDWARE_FAULT,
        Priority.P1,
        "safety-hazard",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "warranty", "category", "priority", "rule"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rule_table(
    overrides: dict[str, Any], warranty: bool | None, category: Category, priority: Priority, rule: str | None
) -> None:
    decided = classify(Facts.of(request(**overrides), under_warranty=warranty))
    assert (decided.category, decided.priority) == (category, priority), decided.matched
    assert decided.rules_version == RULES["version"]
    if rule is not None:
        assert rule in decided.matched
    else:
        assert decided.matched == ()


def test_first_matching_category_rule_wins() -> None:
    decided = classify(Facts.of(request(title="Complaint: I want a refund"), under_warranty=None))
    assert decided.category is Category.COMPLAINT
    assert "kw-return-refund" not in decided.matched


def test_the_shipped_rules_document_is_valid_and_a_broken_one_is_refused() -> None:
    validate_rules(RULES)
    broken = {**RULES, "category_rules": [{"id": "x", "when": {"colour_in": ["red"]}, "category": "other"}]}
    with pytest.raises(ValueError, match="colour_in"):
        validate_rules(broken)
    with pytest.raises(ValueError, match="base_priority"):
        validate_rules({**RULES, "base_priority": {"other": "P4"}})


def test_a_new_rules_version_is_recorded() -> None:
    custom = {**RULES, "version": "test-2", "base_priority": {**RULES["base_priority"], "other": "P2"}}
    decided = classify(Facts.of(request(title="Hello"), under_warranty=None), custom)
    assert (decided.priority, decided.rules_version) == (Priority.P2, "test-2")
