"""Service reports (服务报告): the work performed, parts used, photos, resolution code and the customer's
signature. Signing locks a report: its canonical content is hashed with SHA-256 and any later change is
refused (a correction is a new report that names the one it corrects). Pure functions, no I/O.

Canonical content: a JSON object with sorted keys, no whitespace, UTF-8 (not ASCII-escaped), times in
ISO 8601 UTC to the millisecond, and the signature by the SHA-256 of its bytes (the PNG file, or the
canonical JSON of the strokes). Changing any field, or the signature, changes the hash (China's
Electronic Signature Law, Art. 13: the signature is tied to its signer and any change is detectable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from aftersales.fieldwork.domain import to_ms
from aftersales.shared.aggregate import Decision
from aftersales.shared.contracts.fieldwork import ServiceReportSigned
from aftersales.shared.errors import Conflict, DomainError, InvalidRequest, NotFound

MAX_PARTS = 50
MAX_REMOVED = 50  # part lines taken off one draft (their ids are kept so that they are not reused)
MAX_PHOTOS = 20
MAX_PNG_BYTES = 128 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_STROKES = 100
MAX_POINTS = 5000
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")  # what an uploaded photo may be


class UnsupportedPhotoType(DomainError):
    status = 415
    code = "unsupported_media_type"


class PhotoTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class PhotoErased(DomainError):
    """The photo's bytes were deleted (the customer's erasure, or its retention period ended)."""

    status = 410
    code = "gone"


class ReportStatus(StrEnum):
    DRAFT = "draft"
    SIGNED = "signed"  # locked


class SignatureKind(StrEnum):
    PNG = "png"  # an image of the signature
    STROKES = "strokes"  # the pen's points as captured, [[[x, y], ...], ...]


@dataclass(frozen=True, slots=True)
class PartLine:
    """Parts used on a report, taken from one stock location."""

    line_id: str
    part_id: str
    location_id: str
    quantity: int

    def as_dict(self) -> dict[str, Any]:
        """The line as stored and as hashed."""
        return {
            "line_id": self.line_id,
            "part_id": self.part_id,
            "location_id": self.location_id,
            "quantity": self.quantity,
        }


@dataclass(frozen=True, slots=True)
class Signature:
    kind: SignatureKind
    data: bytes  # the PNG file, or the canonical JSON of the strokes
    signer_name: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class PhotoFile:
    """A photo uploaded to a report: its bytes are stored apart, in chunks; the report keeps their
    SHA-256, which the signature covers (a photo replaced later no longer matches)."""

    photo_id: str
    sha256: str
    content_type: str
    size: int

    def as_dict(self) -> dict[str, Any]:
        """The photo as stored and as hashed."""
        return {
            "photo_id": self.photo_id,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "size": self.size,
        }


def photo_id_of(sha256: str) -> str:
    """Return the id of a photo with these bytes (content-addressed: the same bytes, the same id)."""
    return f"P-{sha256}"


def photo_type(content_type: str) -> str:
    """Return the media type of an upload (parameters dropped); 415 unless JPEG, PNG or WebP."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in PHOTO_TYPES:
        raise UnsupportedPhotoType(
            f"content_type: a photo is one of {', '.join(PHOTO_TYPES)}, not {media or 'missing'}",
            field="content_type",
        )
    return media


@dataclass(frozen=True, slots=True)
class ServiceReport:
    id: str
    ticket_id: str
    technician_id: str
    appointment_id: str | None = None
    work_performed: str = ""
    resolution_code: str | None = None
    photos: tuple[str, ...] = ()  # references (URLs or keys), kept for compatibility
    parts: tuple[PartLine, ...] = ()
    status: ReportStatus = ReportStatus.DRAFT
    signature: Signature | None = None
    signed_at: datetime | None = None
    content_sha256: str | None = None
    supersedes: str | None = None
    removed_lines: tuple[str, ...] = ()  # ids of part lines taken off the draft: not content, never reused
    photo_files: tuple[PhotoFile, ...] = ()  # photos uploaded, by their SHA-256
    photos_erased_at: datetime | None = None  # their bytes were deleted (erasure or retention)
    version: int = 0

    def photo(self, photo_id: str) -> PhotoFile | None:
        return next((p for p in self.photo_files if p.photo_id == photo_id), None)

    def line(self, line_id: str) -> PartLine | None:
        return next((p for p in self.parts if p.line_id == line_id), None)


def png_signature(data: bytes, signer_name: str) -> Signature:
    """Return a PNG signature; 422 when it is not a PNG or larger than 128 KiB."""
    if not data.startswith(PNG_MAGIC):
        raise InvalidRequest("signature.png: not a PNG image", field="signature")
    if len(data) > MAX_PNG_BYTES:
        raise InvalidRequest(f"signature.png: larger than {MAX_PNG_BYTES} bytes", field="signature")
    return Signature(SignatureKind.PNG, data, signer_name)


def stroke_signature(strokes: list[list[tuple[float, float]]], signer_name: str) -> Signature:
    """Return a signature of captured pen strokes; 422 when empty or too many points."""
    points = sum(len(s) for s in strokes)
    if not strokes or points < 2:
        raise InvalidRequest("signature.strokes: no signature drawn", field="signature")
    if len(strokes) > MAX_STROKES or points > MAX_POINTS:
        raise InvalidRequest(
            f"signature.strokes: at most {MAX_STROKES} strokes and {MAX_POINTS} points", field="signature"
        )
    exact = [[[float(x), float(y)] for x, y in stroke] for stroke in strokes]
    return Signature(SignatureKind.STROKES, canonical_json(exact), signer_name)


def strokes_of(signature: Signature) -> list[list[list[float]]]:
    """Return the strokes of a stroke signature (its bytes are their canonical JSON)."""
    strokes: list[list[list[float]]] = json.loads(signature.data)
    return strokes


def canonical_json(value: Any) -> bytes:
    """Return `value` as canonical JSON: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _iso(at: datetime | None) -> str | None:
    return None if at is None else to_ms(at).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical_content(report: ServiceReport) -> dict[str, Any]:
    """Return what a signature covers: every field of the report, the signature by its hash."""
    signature = report.signature
    content: dict[str, Any] = {
        "report_id": report.id,
        "ticket_id": report.ticket_id,
        "technician_id": report.technician_id,
        "appointment_id": report.appointment_id,
        "work_performed": report.work_performed,
        "resolution_code": report.resolution_code,
        "photos": list(report.photos),
        "parts": [p.as_dict() for p in report.parts],
        "signature": None
        if signature is None
        else {"kind": signature.kind.value, "sha256": signature.sha256, "signer_name": signature.signer_name},
        "signed_at": _iso(report.signed_at),
        "supersedes_report_id": report.supersedes,
    }
    if report.photo_files:  # absent when none were uploaded: reports signed before uploads still verify
        content["photo_files"] = [p.as_dict() for p in report.photo_files]
    return content


def content_hash(report: ServiceReport) -> str:
    """Return the SHA-256 (hex) of the report's canonical content."""
    return hashlib.sha256(canonical_json(canonical_content(report))).hexdigest()


def _editable(report: ServiceReport) -> None:
    if report.status != ReportStatus.DRAFT:
        raise Conflict(
            f"report {report.id} is signed and locked; a correction is a new report with "
            f"supersedes_report_id={report.id}",
            field="status",
        )


def check_draft(report: ServiceReport) -> None:
    """409 when the report is signed (locked)."""
    _editable(report)


def correcting(report_id: str, old: ServiceReport, technician_id: str) -> ServiceReport:
    """Return a new draft correcting a signed report: its content copied, unsigned, naming the old one."""
    if old.status != ReportStatus.SIGNED:
        raise Conflict(
            f"report {old.id} is still a draft: edit it instead of correcting it",
            field="supersedes_report_id",
        )
    return ServiceReport(
        id=report_id,
        ticket_id=old.ticket_id,
        technician_id=technician_id,
        appointment_id=old.appointment_id,
        work_performed=old.work_performed,
        resolution_code=old.resolution_code,
        photos=old.photos,
        photo_files=() if old.photos_erased_at else old.photo_files,  # erased photos are not copied
        supersedes=old.id,
    )


def edit(report: ServiceReport, **changes: Any) -> ServiceReport:
    """Return the draft with the given fields changed (work_performed, resolution_code, photos); 409 once
    signed."""
    _editable(report)
    allowed = {"work_performed", "resolution_code", "photos"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    if "photos" in changes and len(changes["photos"]) > MAX_PHOTOS:
        raise InvalidRequest(f"photos: at most {MAX_PHOTOS}", field="photos")
    return replace(report, **changes)


def add_photo(report: ServiceReport, photo: PhotoFile) -> ServiceReport:
    """Return the draft with one more uploaded photo; unchanged when it has these bytes already (a retry);
    409 once signed, 422 when it has MAX_PHOTOS photos."""
    _editable(report)
    if report.photo(photo.photo_id) is not None:
        return report
    if len(report.photo_files) >= MAX_PHOTOS:
        raise InvalidRequest(f"photos: at most {MAX_PHOTOS} photos on a report", field="photos")
    return replace(report, photo_files=(*report.photo_files, photo))


def check_part_line(report: ServiceReport, line: PartLine) -> bool:
    """Return False when the line is on the report already (a retry); 409 when signed, 422 when full."""
    _editable(report)
    if line.line_id in report.removed_lines:
        raise Conflict(
            f"line_id: line {line.line_id} was removed from this report; use a new line id", field="line_id"
        )
    existing = report.line(line.line_id)
    if existing is not None:
        if existing != line:
            raise Conflict(f"parts: line {line.line_id} exists with other parts", field="line_id")
        return False
    if len(report.parts) >= MAX_PARTS:
        raise InvalidRequest(f"parts: at most {MAX_PARTS} lines on a report", field="parts")
    return True


def add_part(report: ServiceReport, line: PartLine) -> ServiceReport:
    """Return the draft with one more part line (its stock already consumed); unchanged for a retry."""
    if not check_part_line(report, line):
        return report
    return replace(report, parts=(*report.parts, line))


def remove_part(report: ServiceReport, line_id: str) -> tuple[ServiceReport, PartLine]:
    """Return the draft without the part line, and the line (its parts go back to stock); 404 when the
    draft has no such line, 409 once signed."""
    _editable(report)
    line = report.line(line_id)
    if line is None:
        raise NotFound(f"report {report.id} has no part line {line_id}", field="line_id")
    if len(report.removed_lines) >= MAX_REMOVED:
        raise Conflict(
            f"parts: {MAX_REMOVED} lines were removed from this draft already; start a new report",
            field="parts",
        )
    parts = tuple(p for p in report.parts if p.line_id != line_id)
    return replace(report, parts=parts, removed_lines=(*report.removed_lines, line_id)), line


def sign(report: ServiceReport, signature: Signature, now: datetime) -> Decision[ServiceReport]:
    """Return the report signed and locked, with its content hash and the event that publishes it."""
    _editable(report)
    if not report.work_performed.strip():
        raise InvalidRequest(
            "work_performed: a report is signed only once the work is described", field="work_performed"
        )
    if not report.resolution_code:
        raise InvalidRequest(
            "resolution_code: a report is signed only with a resolution code", field="resolution_code"
        )
    signed = replace(report, status=ReportStatus.SIGNED, signature=signature, signed_at=to_ms(now))
    signed = replace(signed, content_sha256=content_hash(signed))
    event = ServiceReportSigned(
        report_id=signed.id,
        ticket_id=signed.ticket_id,
        technician_id=signed.technician_id,
        content_sha256=signed.content_sha256 or "",
        signed_at=to_ms(now),
        supersedes_report_id=signed.supersedes,
        resolution_code=signed.resolution_code or "",
    )
    return Decision(signed, (event,))


@dataclass(frozen=True, slots=True)
class Verification:
    report_id: str
    status: ReportStatus
    stored_sha256: str | None
    computed_sha256: str
    matches: bool
    signed_at: datetime | None


def verify(report: ServiceReport, photo_sha256: Mapping[str, str | None] | None = None) -> Verification:
    """Recompute the hash of the report as stored and compare it with the hash stored at signing;
    `photo_sha256` holds the SHA-256 of each uploaded photo recomputed from its stored bytes (None when
    they are missing), so a photo changed behind the report no longer matches."""
    hashed = report
    if photo_sha256 is not None:
        files = tuple(replace(p, sha256=photo_sha256.get(p.photo_id) or "") for p in report.photo_files)
        hashed = replace(report, photo_files=files)
    computed = content_hash(hashed)
    return Verification(
        report_id=report.id,
        status=report.status,
        stored_sha256=report.content_sha256,
        computed_sha256=computed,
        matches=report.status == ReportStatus.SIGNED and computed == report.content_sha256,
        signed_at=report.signed_at,
    )
