from __future__ import annotations

import json
import logging

import pytest

from aftersales.shared.telemetry import JsonFormatter, mask_pii


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("call +8613800138000 now", "13800138000", "***8000"),
        ("mail li.lei@example.com please", "li.lei@example.com", "l***@example.com"),
        ("card 4111 1111 1111 1111 expired", "4111 1111 1111 1111", "****1111"),
        ("landline 010-6552-9988", "010-6552-9988", "***9988"),
    ],
)
def test_contact_data_and_cards_are_masked(text: str, secret: str, kept: str) -> None:
    masked = mask_pii(text)
    assert secret not in masked
    assert kept in masked


def test_ids_and_short_numbers_survive_masking() -> None:
    text = "ticket TK-20261124-0001 has priority P2 and 3 alerts"
    assert mask_pii(text) == text


def test_json_log_line_masks_message_and_extra_fields() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "customer %s called", ("+8613800138000",), None
    )
    record.email = "a.b@example.org"
    line = json.loads(JsonFormatter("intake").format(record))
    assert line["service"] == "intake" and line["level"] == "info"
    assert "13800138000" not in line["msg"]
    assert line["email"] == "a***@example.org"
