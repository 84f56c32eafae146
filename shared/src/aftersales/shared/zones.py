"""IANA time zones at the edges: one validator for every model field that names a zone."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator


def is_known_zone(name: str) -> bool:
    """True when `name` is an IANA time zone this host knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def known_zone(name: str) -> str:
    """Return `name` if it is a known IANA time zone; raise ValueError saying what to use otherwise."""
    if not is_known_zone(name):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like Asia/Shanghai")
    return name


IanaZone = Annotated[str, AfterValidator(known_zone)]
"""A `str` field holding a known IANA time zone name."""
