"""Fieldwork's pure rules: the canonical content and its hash, the lock at signing, verification, and
stock that never goes negative and says "low" exactly once when it crosses its threshold."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.fieldwork import reports, stock
from aftersales.fieldwork.reports import PartLine, ReportStatus, ServiceReport
from aftersales.fieldwork.stock import StockLevel, Use
from aftersales.shared.contracts.fieldwork import ServiceReportSigned, StockConsumed, StockLow, StockReceived
from aftersales.shared.errors import Conflict, InvalidRequest, NotFound

NOW = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)
PNG = reports.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x01" * 40


def draft(**fields: object) -> ServiceReport:
    base = ServiceReport(
        id="R-1",
        ticket_id="T-1",
        technician_id="t1",
        work_performed="换风扇 replaced the fan",
        resolution_code="replaced_part",
        photos=("s3://photos/1.jpg",),
        parts=(PartLine("L1", "FAN-9", "van:t1", 1),),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def signed(report: ServiceReport | None = None) -> ServiceReport:
    decision = reports.sign(report or draft(), reports.png_signature(PNG, "李雷"), NOW)
    return decision.state


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert (
        reports.canonical_json({"b": 1, "a": "换", "c": [1.5, None]})
        == '{"a":"换","b":1,"c":[1.5,null]}'.encode()
    )


def test_the_hash_is_sha256_of_the_canonical_content_with_the_signature_by_its_hash() -> None:
    report = signed()
    expected = (
        '{"appointment_id":null,"parts":[{"line_id":"L1","location_id":"van:t1","part_id":"FAN-9","quantity":1}],'
        '"photos":["s3://photos/1.jpg"],"report_id":"R-1","resolution_code":"replaced_part",'
        f'"signature":{{"kind":"png","sha256":"{hashlib.sha256(PNG).hexdigest()}","signer_name":"李雷"}},'
        '"signed_at":"2026-03-01T08:30:15.123Z","supersedes_report_id":null,"technician_id":"t1",'
        '"ticket_id":"T-1","work_performed":"换风扇 replaced the fan"}'
    )
    assert report.content_sha256 == hashlib.sha256(expected.encode()).hexdigest()
    assert reports.content_hash(report) == report.content_sha256  # stable: computed again, same hash
    assert report.signed_at == datetime(2026, 3, 1, 8, 30, 15, 123000, tzinfo=UTC)  # as the database keeps it


@pytest.mark.parametrize(
    "change",
    [
        {"work_performed": "replaced the fan."},
        {"resolution_code": "other"},
        {"photos": ()},
        {"parts": (PartLine("L1", "FAN-9", "van:t1", 2),)},
        {"signature": reports.png_signature(PNG + b"\x00", "李雷")},
        {"signature": reports.png_signature(PNG, "韩梅梅")},
        {"signed_at": NOW.replace(microsecond=124000)},
        {"supersedes": "R-0"},
    ],
)
def test_any_change_after_signing_is_detected(change: dict[str, object]) -> None:
    report = signed()
    tampered = replace(report, **change)  # type: ignore[arg-type]
    assert reports.verify(report).matches
    check = reports.verify(tampered)
    assert not check.matches and check.computed_sha256 != report.content_sha256


def test_a_signed_report_is_locked() -> None:
    report = signed()
    assert report.status == ReportStatus.SIGNED
    with pytest.raises(Conflict, match="locked"):
        reports.edit(report, work_performed="changed")
    with pytest.raises(Conflict):
        reports.add_part(report, PartLine("L2", "FAN-9", "van:t1", 1))
    with pytest.raises(Conflict):
        reports.sign(report, reports.png_signature(PNG, "李雷"), NOW)


def test_signing_publishes_ids_hash_and_time_only() -> None:
    decision = reports.sign(draft(), reports.png_signature(PNG, "李雷"), NOW)
    [event] = decision.events
    assert isinstance(event, ServiceReportSigned)
    payload = event.model_dump_json()
    assert event.content_sha256 == decision.state.content_sha256
    assert "李雷" not in payload and "fan" not in payload and "s3://" not in payload


def test_a_report_is_signed_only_when_complete() -> None:
    with pytest.raises(InvalidRequest, match="work_performed"):
        reports.sign(draft(work_performed=" "), reports.png_signature(PNG, "x"), NOW)
    with pytest.raises(InvalidRequest, match="resolution_code"):
        reports.sign(draft(resolution_code=None), reports.png_signature(PNG, "x"), NOW)


def test_signatures_are_checked_and_strokes_are_canonical() -> None:
    with pytest.raises(InvalidRequest, match="PNG"):
        reports.png_signature(b"GIF89a", "x")
    with pytest.raises(InvalidRequest, match="larger"):
        reports.png_signature(reports.PNG_MAGIC + b"\x00" * reports.MAX_PNG_BYTES, "x")
    with pytest.raises(InvalidRequest, match="no signature"):
        reports.stroke_signature([], "x")
    one = reports.stroke_signature([[(1, 2), (3, 4.5)]], "x")
    assert one.data == b"[[[1.0,2.0],[3.0,4.5]]]"
    assert reports.strokes_of(one) == [[[1.0, 2.0], [3.0, 4.5]]]


def test_a_correction_is_a_new_draft_naming_the_old_report() -> None:
    old = signed()
    new = reports.correcting("R-2", old, "t1")
    assert (new.status, new.supersedes, new.parts, new.signature) == (ReportStatus.DRAFT, "R-1", (), None)
    with pytest.raises(Conflict, match="draft"):
        reports.correcting("R-3", draft(), "t1")


def test_a_retried_part_line_is_a_no_op_and_a_different_one_with_its_id_a_conflict() -> None:
    report = draft()
    assert reports.add_part(report, PartLine("L1", "FAN-9", "van:t1", 1)) == report
    with pytest.raises(Conflict, match="L1"):
        reports.add_part(report, PartLine("L1", "FAN-9", "van:t1", 3))


def test_a_removed_line_leaves_the_draft_and_its_id_is_never_used_again() -> None:
    report, line = reports.remove_part(draft(), "L1")
    assert (report.parts, report.removed_lines, line.quantity) == ((), ("L1",), 1)
    assert reports.canonical_content(report)["parts"] == []  # removed ids are no content
    with pytest.raises(Conflict, match="removed") as refused:
        reports.add_part(report, PartLine("L1", "FAN-9", "van:t1", 1))
    assert refused.value.field == "line_id"
    with pytest.raises(NotFound):
        reports.remove_part(report, "L1")
    with pytest.raises(Conflict, match="signed"):
        reports.remove_part(signed(), "L1")
    full = replace(draft(), removed_lines=tuple(f"X{i}" for i in range(reports.MAX_REMOVED)))
    with pytest.raises(Conflict, match="removed"):
        reports.remove_part(full, "L1")


# ---------------------------------------------------------------- stock

USE = Use("R-1", "T-1", "L1")


def level(on_hand: int, threshold: int = 2) -> StockLevel:
    return StockLevel("van:t1", "FAN-9", on_hand, threshold, exists=True)


def test_stock_never_goes_negative() -> None:
    with pytest.raises(Conflict, match="1 of part FAN-9"):
        stock.consume(level(1), 2, USE, NOW)
    with pytest.raises(Conflict):
        stock.consume(StockLevel("van:t1", "FAN-9"), 1, USE, NOW)
    assert stock.consume(level(2), 2, USE, NOW).state.on_hand == 0


def test_parts_leave_the_stock_once_per_report_line() -> None:
    taken = stock.consume(level(3), 1, USE, NOW).state
    assert taken.taking == {USE.key} and taken.on_hand == 2
    again = stock.consume(taken, 1, USE, NOW)
    assert again.state == taken and again.events == ()


def test_the_unit_cost_is_the_moving_average_of_the_deliveries_and_every_use_carries_it() -> None:
    empty = StockLevel("van:t1", "FAN-9")
    first = stock.receive(empty, stock.Receipt(2, unit_cost_cents=1000), NOW)
    assert first.state.unit_cost_cents == 1000
    assert isinstance(first.events[0], StockReceived) and first.events[0].unit_cost_cents == 1000
    second = stock.receive(first.state, stock.Receipt(1, unit_cost_cents=1501), NOW).state
    assert second.unit_cost_cents == 1167  # (2 x 1000 + 1501) / 3 = 1167.0, to the fen
    uncosted = stock.receive(second, stock.Receipt(5), NOW).state
    assert (uncosted.on_hand, uncosted.unit_cost_cents) == (8, 1167)  # a delivery without a cost keeps it
    used = stock.consume(uncosted, 2, USE, NOW).events[0]
    assert isinstance(used, StockConsumed) and used.unit_cost_cents == 1167
    back = stock.receive(uncosted, stock.Receipt(2, "returned", unit_cost_cents=1, returned_from=USE), NOW)
    event = back.events[0]
    assert back.state.unit_cost_cents == 1167  # returns re-enter at the average, never move it
    assert isinstance(event, StockReceived) and event.unit_cost_cents is None
    assert (event.report_id, event.ticket_id, event.line_id) == ("R-1", "T-1", "L1")
    assert stock.consume(level(3), 1, USE, NOW).events[0].unit_cost_cents is None  # never priced
    sold_out = replace(second, on_hand=0)
    assert stock.receive(sold_out, stock.Receipt(1, unit_cost_cents=700), NOW).state.unit_cost_cents == 700
    with pytest.raises(InvalidRequest) as refused:
        stock.receive(empty, stock.Receipt(1, unit_cost_cents=stock.MAX_UNIT_COST_CENTS + 1), NOW)
    assert refused.value.field == "unit_cost_cents"


def test_low_stock_is_said_when_the_threshold_is_crossed() -> None:
    assert [type(e) for e in stock.consume(level(5), 2, USE, NOW).events] == [StockConsumed]
    crossing = stock.consume(level(4), 2, USE, NOW).events
    assert [type(e) for e in crossing] == [StockConsumed, StockLow]
    assert [type(e) for e in stock.consume(level(2), 1, USE, NOW).events] == [StockConsumed]


@given(
    start=st.integers(0, 30),
    threshold=st.integers(0, 10),
    takes=st.lists(st.integers(1, 5), max_size=20),
)
def test_a_band_holds_only_values_with_the_same_outcome(start: int, threshold: int, takes: list[int]) -> None:
    """For any stock value in a decision's band, consuming there gives the same events and leaves no
    negative stock (so a write guarded by the band is never wrong); the value decided on is in its band;
    a run of consumptions says low once, when it crosses the threshold."""
    on_hand, lows = start, 0
    for quantity in takes:
        before = level(on_hand, threshold)
        if on_hand < quantity:
            with pytest.raises(Conflict):
                stock.consume(before, quantity, USE, NOW)
            continue
        decision = stock.consume(before, quantity, USE, NOW)
        band = stock.band(before, quantity)
        kinds = [type(e) for e in decision.events]
        for value in range(0, 45):
            inside = value >= band.low and (band.high is None or value <= band.high)
            if value < quantity:
                assert not inside
                continue
            if inside:
                events = stock.consume(level(value, threshold), quantity, USE, NOW).events
                assert [type(e) for e in events] == kinds, (value, band)
        assert band.low <= on_hand and (band.high is None or on_hand <= band.high)
        on_hand = decision.state.on_hand
        lows += kinds.count(StockLow)
        assert on_hand >= 0
    assert lows == (1 if start > threshold >= on_hand else 0)


def test_locations_are_vans_and_warehouses() -> None:
    assert stock.parse_location("van:t1") == ("van", "t1")
    assert stock.parse_location("warehouse:xuhui") == ("warehouse", "xuhui")
    with pytest.raises(InvalidRequest, match="location_id"):
        stock.parse_location("truck:t1")
