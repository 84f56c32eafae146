"""Fieldwork's use cases: routing's and intake's events keep the work-order copy (who holds which ticket);
the desk, the channels and the technicians book and carry out visits, write and sign service reports,
and use spare parts from stock.

The edges (api.py, consumers.py) call these; the rules come from domain.py, reports.py and stock.py, the
writes from store.py. Every object is authorized against the work order it belongs to.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from aftersales.fieldwork import domain, reports
from aftersales.fieldwork import stock as stock_rules
from aftersales.fieldwork.domain import Appointment, Booker, WorkOrder, WorkOrderStatus
from aftersales.fieldwork.hours import BookingHours
from aftersales.fieldwork.hours_store import HoursStore
from aftersales.fieldwork.metrics import APPOINTMENTS, PARTS_REFUSED, REPORTS_SIGNED
from aftersales.fieldwork.reports import PartLine, PhotoFile, PhotoTooLarge, ServiceReport, Signature
from aftersales.fieldwork.stock import StockLevel, Use
from aftersales.fieldwork.store import AppointmentStore, PhotoStore, ReportStore, StockStore, WorkOrderStore
from aftersales.shared.aggregate import Decision, decide_until_written
from aftersales.shared.auth import Principal
from aftersales.shared.contracts.desk import GridConfigured, TechnicianConfigured
from aftersales.shared.errors import DomainError, Forbidden, NotFound, RetryLater

log = logging.getLogger("aftersales.fieldwork")

S = TypeVar("S")
ATTEMPTS = 5  # lost guarded writes before a caller is told to retry (503)


async def until_written(
    load: Callable[[], Awaitable[S]],
    decide: Callable[[S], Decision[S]],
    write: Callable[[S, Decision[S]], Awaitable[bool]],
    what: str,
) -> Decision[S]:
    """Like `decide_until_written`, for aggregates whose edits change state without an event (a report's
    draft): a decision is written when it changes the state or has events."""
    for _ in range(ATTEMPTS):
        before = await load()
        decision = decide(before)
        if (decision.state == before and not decision.events) or await write(before, decision):
            return decision
    raise RetryLater(f"{what} changed on each of {ATTEMPTS} attempts; try again")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def booker_of(caller: Principal) -> Booker:
    if caller.is_channel_only:
        return Booker.CHANNEL
    return Booker.TECHNICIAN if caller.is_technician_only else Booker.DESK


class Fieldwork:
    """The work orders routing assigns and the visits made for them."""

    def __init__(
        self,
        *,
        work_orders: WorkOrderStore,
        appointments: AppointmentStore,
        hours: HoursStore,
    ) -> None:
        self.work_orders = work_orders
        self.appointments = appointments
        self.hours = hours

    # ------------------------------------------------------------------ events (consumers.py)

    async def remember_ticket(self, ticket_id: str, submitted_by: str | None) -> None:
        await self.work_orders.remember_ticket(ticket_id, submitted_by)

    async def assign(
        self,
        ticket_id: str,
        *,
        technician_id: str | None,
        grid_id: str,
        status: WorkOrderStatus,
        at: datetime,
    ) -> None:
        """Apply an assignment fact unless a newer one is held already (redeliveries change nothing)."""
        for _ in range(ATTEMPTS):
            before = await self.work_orders.load(ticket_id)
            after = domain.apply_assignment(
                before, technician_id=technician_id, grid_id=grid_id, status=status, at=at
            )
            if after is None or await self.work_orders.write_assignment(before, after):
                return
        raise RetryLater(f"work order {ticket_id} changed on each of {ATTEMPTS} attempts")

    async def grid_configured(self, grid: GridConfigured) -> None:
        """Keep routing's newest calendar of a grid (older or repeated versions change nothing)."""
        await self.hours.keep_grid(grid)

    async def technician_configured(self, tech: TechnicianConfigured) -> None:
        """Keep routing's newest grid, shift and duty of a technician."""
        await self.hours.keep_technician(tech)

    async def close_ticket(self, ticket_id: str, at: datetime) -> None:
        """The ticket is closed or cancelled: no new visits, and the booked ones are called off."""
        await self.work_orders.close(ticket_id, at)
        for appointment_id in await self.appointments.open_of_ticket(ticket_id):
            await self._cancel_for_closed_ticket(appointment_id)

    async def _cancel_for_closed_ticket(self, appointment_id: str) -> None:
        await until_written(
            lambda: self._appointment(appointment_id),
            lambda a: domain.cancel(a, "ticket_closed", datetime.now(UTC)),
            self.appointments.write,
            f"appointment {appointment_id}",
        )

    # ------------------------------------------------------------------ work orders

    async def work_order(self, caller: Principal, ticket_id: str) -> WorkOrder:
        """Return the work order if the caller may act on it (see `domain.authorize`)."""
        return domain.authorize(caller, await self.work_orders.load(ticket_id), ticket_id)

    async def wait_for_parts(
        self, caller: Principal, ticket_id: str, part_id: str, quantity: int
    ) -> WorkOrder:
        """Record that the work order waits for a part; return it."""
        await self.work_order(caller, ticket_id)
        now = datetime.now(UTC)
        decision = await decide_until_written(
            lambda: self.work_orders.load(ticket_id),
            lambda w: domain.wait_for_parts(w, part_id, quantity, now),
            self.work_orders.write,
            what=f"work order {ticket_id}",
        )
        return decision.state

    # ------------------------------------------------------------------ appointments

    async def _appointment(self, appointment_id: str) -> Appointment:
        found = await self.appointments.load(appointment_id)
        if found is None:
            raise NotFound(f"appointment {appointment_id} not found")
        return found

    async def appointment(self, caller: Principal, appointment_id: str) -> tuple[Appointment, WorkOrder]:
        """Return the appointment and its work order if the caller may see them (404 otherwise)."""
        found = await self._appointment(appointment_id)
        try:
            order = await self.work_order(caller, found.ticket_id)
        except DomainError:
            raise NotFound(f"appointment {appointment_id} not found") from None
        return found, order

    async def book(self, caller: Principal, ticket_id: str, window: tuple[datetime, datetime]) -> Appointment:
        """Book a visit of the work order's technician in the window; return it."""
        order = await self.work_order(caller, ticket_id)
        hours = await self.booking_hours(order)
        decision = domain.book(new_id("A"), order, window, booker_of(caller), datetime.now(UTC), hours)
        await self.appointments.create(decision)
        APPOINTMENTS.labels("booked").inc()
        return decision.state

    async def booking_hours(self, order: WorkOrder) -> BookingHours:
        """Return what a visit of the work order must fit: its grid's calendar and its technician's shift
        (in his grid's zone), as far as fieldwork has copies of them."""
        grid = await self.hours.grid(order.grid_id) if order.grid_id else None
        if grid is None or order.technician_id is None:
            return BookingHours(grid)
        shift = await self.hours.technician(order.technician_id)
        if shift is None or shift.grid_id == grid.grid_id:
            return BookingHours(grid, shift, grid.calendar.timezone)
        home = await self.hours.grid(shift.grid_id)  # lent by a neighbouring grid: his shift is in its zone
        return BookingHours(grid, shift, home.calendar.timezone if home else None)

    async def reschedule(
        self,
        caller: Principal,
        appointment_id: str,
        window: tuple[datetime, datetime],
        chosen_by: Literal["customer", "desk"],
    ) -> Appointment:
        """Move a visit not started yet to another window inside the booking hours; return it."""
        _, order = await self.appointment(caller, appointment_id)
        hours = await self.booking_hours(order)
        return await self.change_appointment(
            caller,
            appointment_id,
            lambda a, current: domain.reschedule(a, current, window, datetime.now(UTC), chosen_by, hours),
        )

    async def change_appointment(
        self,
        caller: Principal,
        appointment_id: str,
        decide: Callable[[Appointment, WorkOrder], Decision[Appointment]],
        *,
        on_site: bool = False,
    ) -> Appointment:
        """Apply a decision to an appointment the caller may act on; `on_site` steps (depart, check in and
        out) only by the work order's technician or a supervisor, never by a channel."""
        _, order = await self.appointment(caller, appointment_id)
        if on_site and caller.is_channel_only:
            raise Forbidden("only the technician or a supervisor records on-site work")
        decision = await until_written(
            lambda: self._appointment(appointment_id),
            lambda a: decide(a, order),
            self.appointments.write,
            f"appointment {appointment_id}",
        )
        for event in decision.events:
            APPOINTMENTS.labels(type(event).__name__).inc()
        return decision.state

    async def day(
        self, caller: Principal, technician_id: str, day: date, timezone: str, limit: int
    ) -> list[Appointment]:
        """Return a technician's route for a local day: the appointments starting that day, by start."""
        if caller.is_technician_only and caller.subject != technician_id:
            raise Forbidden(f"a technician sees only their own day, not {technician_id}'s")
        zone = ZoneInfo(timezone)
        start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        return await self.appointments.day(technician_id, start, end, limit)


class ReportBook:
    """Service reports: drafts, parts used from stock, the customer's signature that locks them."""

    def __init__(
        self,
        reports: ReportStore,
        fieldwork: Fieldwork,
        stockroom: Stockroom,
        photos: PhotoStore,
        photo_max_bytes: int = 5 * 1024 * 1024,
    ) -> None:
        self.reports = reports
        self.fieldwork = fieldwork
        self.stockroom = stockroom
        self.photos = photos
        self.photo_max_bytes = photo_max_bytes

    async def _report(self, report_id: str) -> ServiceReport:
        found = await self.reports.load(report_id)
        if found is None:
            raise NotFound(f"report {report_id} not found")
        return found

    async def report(self, caller: Principal, report_id: str) -> tuple[ServiceReport, WorkOrder]:
        """Return the report and its work order if the caller may see them (404 otherwise)."""
        found = await self._report(report_id)
        try:
            order = await self.fieldwork.work_order(caller, found.ticket_id)
        except DomainError:
            raise NotFound(f"report {report_id} not found") from None
        return found, order

    async def _writable_report(self, caller: Principal, report_id: str) -> tuple[ServiceReport, WorkOrder]:
        found, order = await self.report(caller, report_id)
        if caller.is_channel_only:
            raise Forbidden("the technician writes the report; the customer signs it on their device")
        return found, order

    async def create_report(
        self, caller: Principal, ticket_id: str, supersedes: str | None, **fields: Any
    ) -> ServiceReport:
        """Start a draft report of a work order (or a correction of a signed one); return it."""
        order = await self.fieldwork.work_order(caller, ticket_id)
        if caller.is_channel_only:
            raise Forbidden("the technician writes the report")
        technician = order.technician_id or caller.subject
        if supersedes is not None:
            old, _ = await self.report(caller, supersedes)
            if old.ticket_id != ticket_id:
                raise NotFound(
                    f"report {supersedes} not found for ticket {ticket_id}", field="supersedes_report_id"
                )
            draft = reports.edit(reports.correcting(new_id("R"), old, technician), **fields)
        else:
            draft = reports.edit(ServiceReport(new_id("R"), ticket_id, technician), **fields)
        await self.reports.create(draft)
        return draft

    async def edit_report(self, caller: Principal, report_id: str, **changes: Any) -> ServiceReport:
        """Change a draft's text, resolution code or photos; 409 once it is signed."""
        await self._writable_report(caller, report_id)
        decision = await until_written(
            lambda: self._report(report_id),
            lambda r: Decision(reports.edit(r, **changes)),
            self.reports.write,
            f"report {report_id}",
        )
        return decision.state

    async def add_part(self, caller: Principal, report_id: str, line: PartLine) -> ServiceReport:
        """Use parts on a draft: take them from stock (never below zero), then put the line on the report.
        A retry of the same line changes nothing; a report signed meanwhile gets its parts back. A report
        too busy to write (503) keeps the parts taken for the line: the retry takes nothing more."""
        report, order = await self._writable_report(caller, report_id)
        use = Use(report.id, report.ticket_id, line.line_id)
        if not reports.check_part_line(report, line):
            await self.stockroom.stock.taken(line.location_id, line.part_id, use.key)  # after a crash
            return report
        self._may_take_from(caller, order, line.location_id)
        await self.stockroom.take(line, use)
        try:
            decision = await until_written(
                lambda: self._report(report_id),
                lambda r: Decision(reports.add_part(r, line)),
                self.reports.write,
                f"report {report_id}",
            )
        except DomainError:
            await self.stockroom.give_back(line, use)
            await self.stockroom.stock.taken(line.location_id, line.part_id, use.key)
            raise
        await self.stockroom.stock.taken(line.location_id, line.part_id, use.key)
        return decision.state

    async def remove_part(self, caller: Principal, report_id: str, line_id: str) -> ServiceReport:
        """Take a part line off a draft and return its parts to the stock they came from; 409 once signed.
        The line's id is not used again on this report (a late retry of it must not take parts anew)."""
        await self._writable_report(caller, report_id)
        removed: list[PartLine] = []

        def decide(r: ServiceReport) -> Decision[ServiceReport]:
            after, line = reports.remove_part(r, line_id)
            removed[:] = [line]
            return Decision(after)

        decision = await until_written(
            lambda: self._report(report_id), decide, self.reports.write, f"report {report_id}"
        )
        report = decision.state
        await self.stockroom.give_back(removed[0], Use(report.id, report.ticket_id, line_id))
        return report

    @staticmethod
    def _may_take_from(caller: Principal, order: WorkOrder, location_id: str) -> None:
        kind, owner = stock_rules.parse_location(location_id)
        if not caller.is_technician_only:
            return
        if (kind == "van" and owner != caller.subject) or (kind == "warehouse" and owner != order.grid_id):
            raise Forbidden(
                f"location_id: a technician uses their own van or their grid's warehouse, not {location_id}",
                field="location_id",
            )

    async def sign_report(self, caller: Principal, report_id: str, signature: Signature) -> ServiceReport:
        """Sign and lock a draft with the customer's signature; return it with its content hash."""
        await self._writable_report(caller, report_id)
        now = datetime.now(UTC)
        decision = await until_written(
            lambda: self._report(report_id),
            lambda r: reports.sign(r, signature, now),
            self.reports.write,
            f"report {report_id}",
        )
        REPORTS_SIGNED.inc()
        return decision.state

    async def upload_photo(
        self,
        caller: Principal,
        report_id: str,
        content_type: str,
        body: AsyncIterable[bytes],
        declared_size: int | None = None,
    ) -> tuple[PhotoFile, bool]:
        """Store a photo of a draft (the report's technician, or a supervisor) and put it on the report by
        its SHA-256; return it and whether it is new (the same bytes again return the entry held)."""
        report, _ = await self._writable_report(caller, report_id)
        if caller.is_technician_only and report.technician_id != caller.subject:
            raise Forbidden(f"only the report's technician adds photos to report {report_id}")
        reports.check_draft(report)
        media = reports.photo_type(content_type)
        if declared_size is not None and declared_size > self.photo_max_bytes:
            raise PhotoTooLarge(f"photo: larger than {self.photo_max_bytes} bytes", field="photo")
        upload = await self.photos.receive(new_id("U"), body, media, self.photo_max_bytes)
        photo = PhotoFile(reports.photo_id_of(upload.sha256), upload.sha256, media, upload.size)
        try:
            current = await self._report(report_id)
            held = current.photo(photo.photo_id)
            if held is None:
                reports.add_photo(current, photo)  # refused before the bytes are kept: signed, or full
        except BaseException:
            await self.photos.discard(upload)
            raise
        if held is not None:
            await self.photos.discard(upload)
            return held, False
        await self.photos.keep(upload, photo.photo_id)
        decision = await until_written(
            lambda: self._report(report_id),
            lambda r: Decision(reports.add_photo(r, photo)),
            self.reports.write,
            f"report {report_id}",
        )
        return decision.state.photo(photo.photo_id) or photo, True

    async def photo(
        self, caller: Principal, report_id: str, photo_id: str
    ) -> tuple[PhotoFile, AsyncIterator[bytes]]:
        """Return a report's photo and its bytes, to whoever may see the report."""
        report, _ = await self.report(caller, report_id)
        found = report.photo(photo_id)
        if found is None:
            raise NotFound(f"report {report_id} has no photo {photo_id}", field="photo_id")
        if report.photos_erased_at is not None:
            raise reports.PhotoErased(f"the photos of report {report_id} were erased", field="photo_id")
        return found, self.photos.chunks(found)

    async def verification(self, caller: Principal, report_id: str) -> reports.Verification:
        """Recompute the report's hash, its photos' hashes from their stored bytes, and compare."""
        report, _ = await self.report(caller, report_id)
        hashes = {p.photo_id: await self.photos.sha256(p) for p in report.photo_files}
        return reports.verify(report, hashes)

    async def reports_of(self, caller: Principal, ticket_id: str, limit: int) -> list[ServiceReport]:
        await self.fieldwork.work_order(caller, ticket_id)
        return await self.reports.of_ticket(ticket_id, limit)


class Stockroom:
    """Spare parts per location: received, taken for reports (never below zero), looked up."""

    def __init__(self, stock: StockStore) -> None:
        self.stock = stock

    async def receive(self, location_id: str, part_id: str, receipt: stock_rules.Receipt) -> StockLevel:
        """Add parts to a location's stock (a delivery, or parts returned); return the stock as decided."""
        stock_rules.parse_location(location_id)
        now = datetime.now(UTC)
        decision = await decide_until_written(
            lambda: self.stock.load(location_id, part_id),
            lambda s: stock_rules.receive(s, receipt, now),
            self.stock.put,
            what=f"stock {location_id}:{part_id}",
        )
        return decision.state

    async def give_back(self, line: PartLine, use: Use) -> StockLevel:
        """Return a report line's parts to the stock they were taken from (`stock-received`, reason
        `returned`, naming the report, ticket and line so metrics takes them off the ticket's parts)."""
        receipt = stock_rules.Receipt(line.quantity, "returned", returned_from=use)
        return await self.receive(line.location_id, line.part_id, receipt)

    async def stock_level(self, caller: Principal, location_id: str, part_id: str) -> StockLevel:
        kind, owner = stock_rules.parse_location(location_id)
        if caller.is_technician_only and kind == "van" and owner != caller.subject:
            raise Forbidden(f"a technician sees only their own van, not {location_id}", field="location_id")
        found = await self.stock.load(location_id, part_id)
        if not found.exists:
            raise NotFound(f"no stock of part {part_id} at {location_id}")
        return found

    async def take(self, line: PartLine, use: Use) -> None:
        now = datetime.now(UTC)
        try:
            await decide_until_written(
                lambda: self.stock.load(line.location_id, line.part_id),
                lambda s: stock_rules.consume(s, line.quantity, use, now),
                lambda before, d: self.stock.take(
                    before, d, stock_rules.band(before, line.quantity), use.key
                ),
                attempts=8,
                what=f"stock {line.location_id}:{line.part_id}",
            )
        except DomainError:
            PARTS_REFUSED.inc()
            raise
