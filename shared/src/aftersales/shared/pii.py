"""Personal data in free text: phone numbers, e-mail addresses and card numbers, found and masked.

`mask_pii` keeps a hint for people reading logs (`***5678`, `l***@example.com`); `redact_pii` keeps
nothing and is what free text gets before it is stored or put into an event. Both work inside Chinese
text (`电话13912345678`), on dotted and spaced numbers (`139.1234.5678`), on full-width digits and on
internationalised addresses (`用户@例子.中国`), and `mask_value` walks dicts and lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Characters that end an e-mail address in running text: whitespace, brackets, quotes and CJK punctuation.
_STOP = r"\s@<>()\[\]{},;:\"'`，。；：、（）《》「」『』“”‘’！？"
# Unicode letters and digits (any script) for the local part and the domain; the top-level domain is
# letters only (it may be IDN, e.g. .中国), so `a@b.c` in code or a version string is not taken.
_EMAIL = re.compile(rf"[^{_STOP}]+@[^{_STOP}.]+(?:\.[^{_STOP}.]+)*\.[^\W\d_]{{2,}}")
# ASCII-only look-arounds: a CJK character next to a number does not make it part of a word.
_CARD = re.compile(r"(?<![A-Za-z0-9+])(?:\d[ -]?){12,18}\d(?![A-Za-z0-9])")
_PHONE = re.compile(r"(?<![A-Za-z0-9_-])\+?\(?\d[\d ().\-\u3000]{6,}\d(?![A-Za-z0-9_-])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MIN_PHONE_DIGITS = 8


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _phone_like(match: re.Match[str]) -> bool:
    text = match.group().strip()
    if _ISO_DATE.match(text):  # a date, maybe with a time after it, is not a phone number
        text = text[10:]
    return len(_digits(text)) >= MIN_PHONE_DIGITS


def _substitute(
    text: str, email: Callable[[str], str], card: Callable[[str], str], phone: Callable[[str], str]
) -> str:
    text = _EMAIL.sub(lambda m: email(m.group()), text)
    text = _CARD.sub(lambda m: card(m.group()), text)
    return _PHONE.sub(lambda m: phone(m.group()) if _phone_like(m) else m.group(), text)


def mask_pii(text: str) -> str:
    """Return `text` with e-mail addresses, card numbers and phone numbers masked (a hint is kept)."""
    return _substitute(
        text,
        lambda e: e[0] + "***@" + e.split("@", 1)[1],
        lambda c: "****" + _digits(c)[-4:],
        lambda p: "***" + _digits(p)[-4:],
    )


def redact_pii(text: str) -> str:
    """Return `text` with every e-mail address, card number and phone number replaced by a placeholder."""
    return _substitute(text, lambda _: "[email]", lambda _: "[card]", lambda _: "[phone]")


def redact_optional(text: str | None) -> str | None:
    """`redact_pii` for optional free text."""
    return None if text is None else redact_pii(text)


def mask_value(value: Any) -> Any:
    """Return `value` with every string in it masked, walking dicts, lists, tuples and sets."""
    if isinstance(value, str):
        return mask_pii(value)
    if isinstance(value, dict):
        return {k: mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_pii(str(value))  # anything else is logged as its text


def find_pii(text: str) -> list[str]:
    """Return the phone numbers, e-mail addresses and card numbers found in `text` (for tests and audits)."""
    found = [m.group() for m in _EMAIL.finditer(text)]
    found += [m.group() for m in _CARD.finditer(text)]
    return found + [m.group() for m in _PHONE.finditer(text) if _phone_like(m)]
