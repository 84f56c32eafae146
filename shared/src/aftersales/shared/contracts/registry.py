"""Registry of event types: CloudEvents `type` -> (topic, pydantic model), with JSON Schema export."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from aftersales.shared.contracts.topics import Topic


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: str
    topic: Topic
    model: builtins.type[BaseModel]
    summary: str


REGISTRY: dict[str, EventSpec] = {}
_BY_MODEL: dict[type[BaseModel], EventSpec] = {}

M = TypeVar("M", bound=type[BaseModel])


def event(type_: str, topic: Topic) -> Callable[[M], M]:
    """Register a model as the data of CloudEvents type `type_` published on `topic`."""

    def register(model: M) -> M:
        if type_ in REGISTRY:
            raise ValueError(f"event type {type_} registered twice")
        spec = EventSpec(type=type_, topic=topic, model=model, summary=(model.__doc__ or "").strip())
        REGISTRY[type_] = spec
        _BY_MODEL[model] = spec
        return model

    return register


def spec_for(type_: str) -> EventSpec | None:
    """Return the spec of a CloudEvents type, or None when it is not part of the contract."""
    return REGISTRY.get(type_)


def event_type_of(model: BaseModel | type[BaseModel]) -> EventSpec:
    """Return the spec registered for an event model (instance or class)."""
    cls = model if isinstance(model, type) else type(model)
    try:
        return _BY_MODEL[cls]
    except KeyError:
        raise LookupError(f"{cls.__name__} is not a registered event model") from None


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of every registered event's data, keyed by CloudEvents type."""
    return {t: spec.model.model_json_schema(mode="serialization") for t, spec in sorted(REGISTRY.items())}
