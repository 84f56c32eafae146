from __future__ import annotations

import copy

from aftersales.shared.contracts import json_schemas
from aftersales.shared.docs import committed_schemas, incompatibilities

TYPE = "aftersales.ticket.created.v1"


def test_committed_schemas_match_the_models() -> None:
    assert incompatibilities(committed_schemas(), json_schemas()) == []
    assert set(committed_schemas()) == set(json_schemas())


def test_adding_an_optional_field_is_compatible() -> None:
    old = json_schemas()
    new = copy.deepcopy(old)
    new[TYPE]["properties"]["site_id"] = {"type": "string", "default": None}
    assert incompatibilities(old, new) == []


def test_removing_retyping_or_requiring_a_field_is_refused() -> None:
    old = json_schemas()
    removed = copy.deepcopy(old)
    del removed[TYPE]["properties"]["customer_id"]
    assert incompatibilities(old, removed) == [f"{TYPE}.customer_id: field removed"]
    retyped = copy.deepcopy(old)
    retyped[TYPE]["properties"]["customer_id"] = {"type": "integer"}
    assert incompatibilities(old, retyped) == [f"{TYPE}.customer_id: type changed"]
    required = copy.deepcopy(old)
    required[TYPE]["properties"]["site_id"] = {"type": "string"}
    required[TYPE]["required"].append("site_id")
    assert incompatibilities(old, required) == [f"{TYPE}.site_id: new required field"]
    dropped = {k: v for k, v in old.items() if k != TYPE}
    assert incompatibilities(old, dropped) == [f"{TYPE}: event type removed"]
