"""Value types shared by several events: channels, categories, priorities, customer tiers."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


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
