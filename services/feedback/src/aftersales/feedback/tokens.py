"""Survey tokens: HMAC-SHA256-signed, expiring links a customer uses without an account.

Format: `<survey id, base64url>.<expiry, unix seconds>.<signature, base64url>`; the signature covers a
version tag, the survey id and the expiry, so neither can be changed. Single use is enforced by the store
(a survey is answered once); this module only proves a token is ours and still valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from aftersales.shared.errors import DomainError

VERSION = "v1"


class InvalidToken(DomainError):
    """Malformed or not signed with our key (forged or tampered): 403."""

    status = 403
    code = "invalid_token"


class ExpiredToken(DomainError):
    """Genuine but past its expiry: 410."""

    status = 410
    code = "token_expired"


@dataclass(frozen=True, slots=True)
class SurveyClaim:
    survey_id: str
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, survey_id: str, expires_s: int) -> bytes:
    return hmac.new(key, f"{VERSION}|{survey_id}|{expires_s}".encode(), hashlib.sha256).digest()


def sign(survey_id: str, expires_at: datetime, key: bytes) -> str:
    """Return the token for a survey that expires at `expires_at` (whole seconds)."""
    expires_s = int(expires_at.timestamp())
    return f"{_b64(survey_id.encode())}.{expires_s}.{_b64(_mac(key, survey_id, expires_s))}"


def verify(token: str, key: bytes, now: datetime) -> SurveyClaim:
    """Return what a genuine, unexpired token claims; raise InvalidToken or ExpiredToken otherwise."""
    parts = token.split(".")
    # isascii too: "²" is a digit to str.isdigit but not to int()
    if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()) or len(token) > 1024:
        raise InvalidToken("this survey link is not valid")
    try:
        survey_id = _unb64(parts[0]).decode()
        signature = _unb64(parts[2])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidToken("this survey link is not valid") from None
    expires_s = int(parts[1])
    if not hmac.compare_digest(signature, _mac(key, survey_id, expires_s)):
        raise InvalidToken("this survey link is not valid")
    expires_at = datetime.fromtimestamp(expires_s, UTC)
    if now >= expires_at:
        raise ExpiredToken("this survey link has expired")
    return SurveyClaim(survey_id, expires_at)
