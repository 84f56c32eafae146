"""Fieldwork and personal-data rights, in-process: an erasure removes the customer's signature, where the
technician met the customer and the work notes from the documents of its tickets, and is confirmed once
(with zero counts for a customer fieldwork never saw)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from aftersales.fieldwork import reports
from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.reports import ServiceReport
from aftersales.shared.contracts.privacy import ErasureRequested
from aftersales.shared.envelope import CloudEvent, new_event
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

CONFIRMED = "aftersales.privacy.erasure-confirmed.v1"
PNG = reports.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x01" * 40


@pytest.fixture
async def fieldwork() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


def erasure(erasure_id: str, customer_id: str, ticket_ids: list[str]) -> CloudEvent:
    request = ErasureRequested(
        erasure_id=erasure_id, customer_id=customer_id, ticket_ids=ticket_ids, requested_at=datetime.now(UTC)
    )
    return new_event(request, source="/aftersales/intake", subject=customer_id)


async def test_erasure_removes_signatures_and_where_the_customer_was_met(fieldwork: ServiceUnderTest) -> None:
    now = datetime.now(UTC)
    draft = ServiceReport("R-1", "T-1", "t1", work_performed="fixed", resolution_code="replaced_part")
    signed = reports.sign(draft, reports.png_signature(PNG, "李雷"), now).state
    await fieldwork.app.state.reports.reports.create(signed)
    appointment = {
        "_id": "A-1",
        "ticket_id": "T-1",
        "check_in_point": {"lat": 31.2, "lon": 121.5},
        "work_done": "met 李雷 at home",
        "version": 1,
    }
    await fieldwork.runtime.db["appointments"].insert_one(appointment)
    await fieldwork.deliver(erasure("ER-1", "C-1", ["T-1"]), copies=2)
    [confirmed] = await fieldwork.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"appointments": 1, "signatures": 1}
    report = await fieldwork.runtime.db["reports"].find_one({"_id": "R-1"})
    met = await fieldwork.runtime.db["appointments"].find_one({"_id": "A-1"})
    assert "李雷" not in str(report) and "李雷" not in str(met) and met is not None
    assert met["check_in_point"] is None and report is not None and report["signature"]["data"] == ""


async def test_erasure_of_a_customer_never_seen_confirms_with_zero_counts(
    fieldwork: ServiceUnderTest,
) -> None:
    await fieldwork.deliver(erasure("ER-2", "C-2", []))
    [confirmed] = await fieldwork.published_exactly(CONFIRMED)
    assert confirmed.data["counts"] == {"appointments": 0, "signatures": 0}
