"""Value types shared by several events: channels, categories, priorities, customer tiers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from aftersales.shared.pii import redact_pii

# Text a person or a channel wrote (a reason, a model name): phone numbers, e-mail addresses and card
# numbers are replaced by placeholders when the event is built, so they never reach a topic.
FreeText = Annotated[str, AfterValidator(redact_pii)]


class Channel(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    CHAT = "chat"
    SOCIAL = "social"
    WEB = "web"
    IOT = "iot"
    WALK_IN = "walk_in"


class Category(StrEnum):
    HARDWARE_FAULT = "hardware_fault"
    SOFTWARE_FAULT = "software_fault"
    USAGE_QUESTION = "usage_question"
    INSTALLATION = "installation"
    RETURN_REFUND = "return_refund"
    COMPLAINT = "complaint"
    OTHER = "other"


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class CustomerTier(StrEnum):
    STANDARD = "standard"
    GOLD = "gold"
    KEY_ACCOUNT = "key_account"


class EventData(BaseModel):
    """Base of every event's data. Unknown fields are ignored so that optional additions stay compatible."""

    model_config = ConfigDict(extra="ignore", frozen=True)
