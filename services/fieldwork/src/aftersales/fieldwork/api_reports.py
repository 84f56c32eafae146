"""HTTP routes of fieldwork's service reports (draft, parts used, the customer's signature, verification,
the customer's page) and spare-part stock. They parse, call a use case and shape the answer; who may see
which object is decided in service.py."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from aftersales.fieldwork import reports
from aftersales.fieldwork.api import Key, PartId, Text
from aftersales.fieldwork.reports import PartLine, PhotoFile, ReportStatus, ServiceReport, Signature
from aftersales.fieldwork.service import ReportBook, Stockroom, new_id
from aftersales.fieldwork.stock import MAX_UNIT_COST_CENTS, StockLevel
from aftersales.fieldwork.stock import Receipt as StockReceipt
from aftersales.fieldwork.views import report_page
from aftersales.shared.errors import InvalidRequest
from aftersales.shared.roles import AnyCaller, Staff, Supervisor, service_of

Coordinate = Annotated[float, Field(ge=-100_000, le=100_000)]  # a pen position (finite: no NaN)
PhotoKey = Annotated[str, Path(min_length=1, max_length=80, pattern=r"^P-[0-9a-f]{64}$")]
LineKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Reports = Annotated[ReportBook, service_of("reports", ReportBook)]
Stock = Annotated[Stockroom, service_of("stockroom", Stockroom)]


# ---------------------------------------------------------------- service reports


class ReportEdit(BaseModel):
    work_performed: Text | None = None
    resolution_code: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    photos: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        default=None, max_length=reports.MAX_PHOTOS, description="references to stored photos (URLs or keys)"
    )

    def changes(self) -> dict[str, object]:
        fields = self.model_dump(exclude_unset=True)
        for name in ("work_performed", "resolution_code", "photos"):
            if name in fields and fields[name] is None:
                raise InvalidRequest(f"{name}: may not be null", field=name)
        if "photos" in fields:
            fields["photos"] = tuple(fields["photos"])
        return fields


class ReportCreate(ReportEdit):
    ticket_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    supersedes_report_id: str | None = Field(
        default=None, max_length=100, description="the report it corrects"
    )

    def changes(self) -> dict[str, object]:
        return {k: v for k, v in ReportEdit.changes(self).items() if k in ReportEdit.model_fields}


class PartsUsed(BaseModel):
    line_id: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the client's id for the line: a retry with it takes nothing more",
    )
    part_id: PartId
    location_id: str = Field(max_length=80, description="van:<technician id> or warehouse:<grid id>")
    quantity: int = Field(ge=1, le=1000)


class SignatureWrite(BaseModel):
    signer_name: str = Field(min_length=1, max_length=100)
    png_base64: str | None = Field(default=None, max_length=180_000, description="a PNG image, base64")
    strokes: list[list[tuple[Coordinate, Coordinate]]] | None = Field(
        default=None, max_length=reports.MAX_STROKES, description="pen strokes, each a list of [x, y] points"
    )

    @model_validator(mode="after")
    def _one_form(self) -> SignatureWrite:
        if (self.png_base64 is None) == (self.strokes is None):
            raise ValueError("give the signature as png_base64 or as strokes, one of them")
        return self

    def signature(self) -> Signature:
        if self.strokes is not None:
            return reports.stroke_signature(self.strokes, self.signer_name)
        try:
            data = base64.b64decode(self.png_base64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("signature.png_base64: not base64", field="signature") from None
        return reports.png_signature(data, self.signer_name)


class PartLineRead(BaseModel):
    line_id: str
    part_id: str
    location_id: str
    quantity: int


class PhotoRead(BaseModel):
    photo_id: str
    sha256: str = Field(description="SHA-256 of the photo's bytes; the signature covers it")
    content_type: str
    size: int


def _photo(p: PhotoFile) -> PhotoRead:
    return PhotoRead(photo_id=p.photo_id, sha256=p.sha256, content_type=p.content_type, size=p.size)


class ReportRead(BaseModel):
    id: str
    ticket_id: str
    technician_id: str
    status: ReportStatus
    work_performed: str
    resolution_code: str | None
    photos: list[str]
    photo_files: list[PhotoRead] = Field(default_factory=list, description="photos uploaded, by SHA-256")
    parts: list[PartLineRead]
    signer_name: str | None = None
    signature_kind: str | None = None
    signature_sha256: str | None = None
    signed_at: datetime | None = None
    content_sha256: str | None = None
    supersedes_report_id: str | None = None


def _report(r: ServiceReport) -> ReportRead:
    s = r.signature
    return ReportRead(
        id=r.id,
        ticket_id=r.ticket_id,
        technician_id=r.technician_id,
        status=r.status,
        work_performed=r.work_performed,
        resolution_code=r.resolution_code,
        photos=list(r.photos),
        photo_files=[_photo(p) for p in r.photo_files],
        parts=[PartLineRead(**p.as_dict()) for p in r.parts],
        signer_name=None if s is None else s.signer_name,
        signature_kind=None if s is None else s.kind.value,
        signature_sha256=None if s is None else s.sha256,
        signed_at=r.signed_at,
        content_sha256=r.content_sha256,
        supersedes_report_id=r.supersedes,
    )


class VerificationRead(BaseModel):
    report_id: str
    status: ReportStatus
    stored_sha256: str | None
    computed_sha256: str
    matches: bool
    signed_at: datetime | None


class ReportList(BaseModel):
    items: list[ReportRead]
    count: int


reports_router = APIRouter(prefix="/v1/reports", tags=["service reports"])


@reports_router.post("", status_code=201, summary="Start a draft report (or a correction of a signed one)")
async def create_report(body: ReportCreate, caller: Staff, book: Reports) -> ReportRead:
    return _report(
        await book.create_report(caller, body.ticket_id, body.supersedes_report_id, **body.changes())
    )


@reports_router.get("", summary="A ticket's service reports, oldest first")
async def list_reports(
    caller: AnyCaller,
    book: Reports,
    ticket_id: Annotated[str, Query(min_length=1, max_length=100)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ReportList:
    items = [_report(r) for r in await book.reports_of(caller, ticket_id, limit)]
    return ReportList(items=items, count=len(items))


@reports_router.get("/{report_id}", summary="A service report")
async def get_report(report_id: Key, caller: AnyCaller, book: Reports) -> ReportRead:
    found, _ = await book.report(caller, report_id)
    return _report(found)


@reports_router.patch("/{report_id}", summary="Edit a draft (409 once signed: a correction is a new report)")
async def edit_report(report_id: Key, body: ReportEdit, caller: Staff, book: Reports) -> ReportRead:
    return _report(await book.edit_report(caller, report_id, **body.changes()))


@reports_router.post("/{report_id}/parts", summary="Use parts on a draft: taken from stock, never below zero")
async def add_parts(report_id: Key, body: PartsUsed, caller: Staff, book: Reports) -> ReportRead:
    line = PartLine(body.line_id or new_id("L"), body.part_id, body.location_id, body.quantity)
    return _report(await book.add_part(caller, report_id, line))


@reports_router.delete(
    "/{report_id}/parts/{line_id}", summary="Take a part line off a draft: its parts go back to stock"
)
async def remove_parts(report_id: Key, line_id: LineKey, caller: Staff, book: Reports) -> ReportRead:
    return _report(await book.remove_part(caller, report_id, line_id))


@reports_router.post("/{report_id}/sign", summary="The customer signs: the report is hashed and locked")
async def sign_report(report_id: Key, body: SignatureWrite, caller: Staff, book: Reports) -> ReportRead:
    return _report(await book.sign_report(caller, report_id, body.signature()))


_PHOTO_BODY = {
    "requestBody": {
        "required": True,
        "description": "the image's bytes",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in reports.PHOTO_TYPES},
    }
}


@reports_router.post(
    "/{report_id}/photos",
    status_code=201,
    summary="Upload a photo to a draft (JPEG, PNG or WebP): the signature covers its SHA-256",
    openapi_extra=_PHOTO_BODY,
    responses={200: {"description": "these bytes are on the report already", "model": PhotoRead}},
)
async def upload_photo(
    report_id: Key, request: Request, response: Response, caller: Staff, book: Reports
) -> PhotoRead:
    declared = request.headers.get("content-length", "")
    photo, created = await book.upload_photo(
        caller,
        report_id,
        request.headers.get("content-type", ""),
        request.stream(),
        int(declared) if declared.isdigit() else None,
    )
    if not created:
        response.status_code = 200
    return _photo(photo)


@reports_router.get(
    "/{report_id}/photos/{photo_id}",
    response_class=StreamingResponse,
    summary="A photo of a report, as uploaded",
    responses={200: {"content": {t: {} for t in reports.PHOTO_TYPES}}},
)
async def get_photo(
    report_id: Key, photo_id: PhotoKey, caller: AnyCaller, book: Reports
) -> StreamingResponse:
    photo, chunks = await book.photo(caller, report_id, photo_id)
    return StreamingResponse(
        chunks,
        media_type=photo.content_type,
        headers={"Content-Length": str(photo.size), "ETag": f'"{photo.sha256}"'},
    )


@reports_router.get("/{report_id}/verification", summary="Recompute the report's hash and compare it")
async def verify_report(report_id: Key, caller: AnyCaller, book: Reports) -> VerificationRead:
    check = await book.verification(caller, report_id)
    return VerificationRead(
        report_id=check.report_id,
        status=check.status,
        stored_sha256=check.stored_sha256,
        computed_sha256=check.computed_sha256,
        matches=check.matches,
        signed_at=check.signed_at,
    )


@reports_router.get(
    "/{report_id}/view", response_class=HTMLResponse, summary="The report as the customer sees it"
)
async def view_report(report_id: Key, caller: AnyCaller, book: Reports) -> HTMLResponse:
    found, _ = await book.report(caller, report_id)
    return HTMLResponse(report_page(found))


# ---------------------------------------------------------------- stock


class Receipt(BaseModel):
    quantity: int = Field(ge=1, le=100_000)
    low_stock_threshold: int | None = Field(default=None, ge=0, le=100_000)
    unit_cost_cents: int | None = Field(
        default=None,
        ge=0,
        le=MAX_UNIT_COST_CENTS,
        description="what one part of this delivery cost, in the smallest currency unit (分 for CNY); the "
        "stock keeps the moving average, and every part used carries it (`stock-consumed`)",
    )


class StockRead(BaseModel):
    location_id: str
    part_id: str
    on_hand: int
    low_stock_threshold: int
    unit_cost_cents: int | None = Field(description="the moving average of the deliveries' unit costs")


def _stock(level: StockLevel) -> StockRead:
    return StockRead(
        location_id=level.location_id,
        part_id=level.part_id,
        on_hand=level.on_hand,
        low_stock_threshold=level.low_threshold,
        unit_cost_cents=level.unit_cost_cents,
    )


stock_router = APIRouter(prefix="/v1/stock", tags=["spare parts"])
PartKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


@stock_router.post(
    "/{location_id}/{part_id}/receipts", summary="Parts arrive at a van or a warehouse (supervisor)"
)
async def receive(
    location_id: Key, part_id: PartKey, body: Receipt, _: Supervisor, stockroom: Stock
) -> StockRead:
    receipt = StockReceipt(
        body.quantity, "delivery", threshold=body.low_stock_threshold, unit_cost_cents=body.unit_cost_cents
    )
    await stockroom.receive(location_id, part_id, receipt)
    return _stock(await stockroom.stock.load(location_id, part_id))


@stock_router.get("/{location_id}/{part_id}", summary="Stock of a part at a van or a warehouse")
async def get_stock(location_id: Key, part_id: PartKey, caller: Staff, stockroom: Stock) -> StockRead:
    return _stock(await stockroom.stock_level(caller, location_id, part_id))
