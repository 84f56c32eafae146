"""The public event contract: topics, event models and the registry that ties a CloudEvents type to both."""

from aftersales.shared.contracts import (  # noqa: F401  (registers every event type)
    desk,
    events,
    fieldwork,
    notifications,
    privacy,
    requests,
    tickets_desk,
)
from aftersales.shared.contracts.registry import REGISTRY, EventSpec, event_type_of, json_schemas, spec_for
from aftersales.shared.contracts.topics import Topic, dead_letter_topic

__all__ = ["REGISTRY", "EventSpec", "Topic", "dead_letter_topic", "event_type_of", "json_schemas", "spec_for"]
