"""Retention (PIPL) in fieldwork: personal data is removed once its record has not changed for its
kind's period, by the erasure's own code (`AppointmentStore.erase_appointment`,
`ReportStore.erase_signature`, `PersonalData.erase_photos`); ids, states, times, parts and the reports'
content hashes stay, so KPIs keep counting. Scheduling is the shared one (`aftersales.shared.retention`).

- `appointment_points` (`RETENTION_APPOINTMENT_POINTS_DAYS`), by appointment: the check-in and
  check-out points and the work notes; armed by the write of a check-in or check-out that stores them
  (`AppointmentStore.write`).
- `report_signature` (`RETENTION_REPORT_SIGNATURE_DAYS`), by service report: the signature and the
  signer's name; armed by the write that signs the report (`ReportStore.write`).
- `report_photos` (`RETENTION_REPORT_PHOTOS_DAYS`), by service report: the uploaded photos' bytes; armed
  by the write of its first photo (`ReportStore.write`), or a correction created with its original's
  (`ReportStore.create`).

Each is armed by one `arm` call (the stores' `noted` hook) after the write, within an HTTP request
that is not a hot path (a technician's check-in, a customer's signature, a photo upload); a later change
of the record (another photo, the signing, the check-out) moves its activity on, and the firing arms it
again (the shared scheduler's re-arm), so only the first such write of a record needs to arm it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from aftersales.fieldwork.privacy import PersonalData
from aftersales.fieldwork.store import (
    APPOINTMENT_POINTS,
    REPORT_PHOTOS,
    REPORT_SIGNATURE,
    AppointmentStore,
    ReportStore,
)
from aftersales.shared.retention import Retention
from aftersales.shared.runtime import ServiceRuntime

__all__ = ["APPOINTMENT_POINTS", "REPORT_PHOTOS", "REPORT_SIGNATURE", "FieldworkRetention"]


class RetentionSettings(Protocol):
    retention_appointment_points_days: float
    retention_report_signature_days: float
    retention_report_photos_days: float


class FieldworkRetention:
    """Fieldwork's kinds of personal data with their periods; `noted` arms a record."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        appointments: AppointmentStore,
        reports: ReportStore,
        personal_data: PersonalData,
        settings: RetentionSettings,
    ) -> None:
        self.schedule = Retention(runtime, service="fieldwork")
        self.schedule.kind(
            APPOINTMENT_POINTS,
            days=settings.retention_appointment_points_days,
            activity=appointments.points_activity,
            pseudonymise=_until(appointments.erase_appointment),
        )
        self.schedule.kind(
            REPORT_SIGNATURE,
            days=settings.retention_report_signature_days,
            activity=reports.signature_activity,
            pseudonymise=_until(reports.erase_signature),
        )
        self.schedule.kind(
            REPORT_PHOTOS,
            days=settings.retention_report_photos_days,
            activity=reports.photos_activity,
            pseudonymise=_until(personal_data.erase_photos),
        )

    async def noted(self, kind: str, record_id: str, at: datetime) -> None:
        """Personal data of `kind` was stored on the record at `at`: arm its removal."""
        await self.schedule.arm(kind, record_id, at)


def _until(
    erase: Callable[..., Awaitable[bool]],
) -> Callable[[str, datetime], Awaitable[bool]]:
    """The erasure of one record, guarded by its last activity (the retention's `pseudonymise`)."""

    async def pseudonymise(record_id: str, active_until: datetime) -> bool:
        return await erase(record_id, active_until=active_until)

    return pseudonymise
