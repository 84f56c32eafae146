"""Fieldwork and PIPL data exports, in-process: the appointments and service reports of the customer's
tickets (where the customer was met, the work notes, the signature and the signer's name) are answered
sealed to the export's key, once; nothing of them is in plaintext on the topic."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from aftersales.fieldwork import reports
from aftersales.fieldwork.app import Settings, build
from aftersales.fieldwork.reports import ServiceReport
from aftersales.shared.contracts.privacy import ExportRequested
from aftersales.shared.envelope import new_event
from aftersales.shared.export import ExportKeys, unseal
from aftersales.shared.testing import FAST, ServiceUnderTest, in_process

ANSWERED = "aftersales.privacy.export-answered.v1"
PNG = reports.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x01" * 40


@pytest.fixture
async def fieldwork() -> AsyncIterator[ServiceUnderTest]:
    async with in_process(build, Settings(**FAST)) as svc:
        yield svc


async def test_export_answers_appointments_and_signed_reports_sealed(fieldwork: ServiceUnderTest) -> None:
    now = datetime.now(UTC)
    draft = ServiceReport("R-1", "T-1", "t1", work_performed="fixed", resolution_code="replaced_part")
    signed = reports.sign(draft, reports.png_signature(PNG, "李雷"), now).state
    await fieldwork.app.state.reports.reports.create(signed)
    appointment = {
        "_id": "A-1",
        "ticket_id": "T-1",
        "technician_id": "t1",
        "window_start": now,
        "window_end": now + timedelta(hours=2),
        "status": "completed",
        "check_in_point": {"lat": 31.2, "lon": 121.5},
        "work_done": "met 李雷 at home",
        "version": 1,
    }
    await fieldwork.runtime.db["appointments"].insert_one(appointment)
    keys = ExportKeys.generate()
    request = ExportRequested(
        export_id="EX-1", customer_id="C-1", ticket_ids=["T-1"], public_key=keys.public_key, requested_at=now
    )
    await fieldwork.deliver(new_event(request, source="/aftersales/intake", subject="C-1"), copies=2)
    [answered] = await fieldwork.published_exactly(ANSWERED)
    assert answered.data["counts"] == {"appointments": 1, "reports": 1}
    assert "李雷" not in answered.value().decode() and "121.5" not in answered.value().decode()
    records = json.loads(unseal(keys.private_key, answered.data["sealed"]))["records"]
    [met], [report] = records["appointments"], records["reports"]
    assert met["work_done"] == "met 李雷 at home" and met["check_in_point"] == {"lat": 31.2, "lon": 121.5}
    assert report["signature"]["signer_name"] == "李雷" and report["signature"]["data"]
