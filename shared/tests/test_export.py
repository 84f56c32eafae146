"""The export's packing and sealing: records split into parts that fit a Kafka message, each part opened
only with the export's private key, and a record too large for a part replaced by a note."""

from __future__ import annotations

import json

import pytest
from nacl.exceptions import CryptoError

from aftersales.shared.export import ExportKeys, pack, seal, unseal


def test_records_are_split_into_parts_that_fit_and_open_with_the_key() -> None:
    records = {
        "visits": [{"_id": f"V-{n}", "note": "é" * 100} for n in range(40)],
        "big": [{"_id": "B", "x": "y" * 5000}],
    }
    parts = pack(records, part_bytes=2000)
    assert len(parts) > 1 and all(len(p.plaintext) <= 2000 for p in parts)
    keys = ExportKeys.generate()
    opened = [
        json.loads(unseal(keys.private_key, seal(keys.public_key, p.plaintext)))["records"] for p in parts
    ]
    visits = [v["_id"] for o in opened for v in o.get("visits", [])]
    assert visits == [f"V-{n}" for n in range(40)]
    assert [b for o in opened for b in o.get("big", [])] == [{"_id": "B", "omitted_bytes": 5018}]
    assert sum(p.counts.get("visits", 0) for p in parts) == 40


def test_an_empty_answer_is_one_part_naming_every_kind() -> None:
    [part] = pack({"visits": []})
    assert part.counts == {"visits": 0} and json.loads(part.plaintext) == {"records": {}}


def test_another_key_cannot_open_a_sealed_part() -> None:
    sealed = seal(ExportKeys.generate().public_key, b'{"records":{}}')
    with pytest.raises(CryptoError):
        unseal(ExportKeys.generate().private_key, sealed)
