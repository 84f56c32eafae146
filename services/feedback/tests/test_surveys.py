"""Survey tokens (signing, tampering, expiry), answerability, result arithmetic, the signing-key setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aftersales.feedback import tokens
from aftersales.feedback.app import DEV_SIGNING_KEY, Settings
from aftersales.feedback.domain import (
    SurveyReused,
    SurveyStatus,
    check_answerable,
    opens_complaint,
    summarize,
)
from aftersales.feedback.tokens import ExpiredToken, InvalidToken

KEY = b"k" * 32
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=7)


def test_round_trip() -> None:
    token = tokens.sign("SV-T-1-r1", EXPIRES, KEY)
    claim = tokens.verify(token, KEY, NOW)
    assert claim.survey_id == "SV-T-1-r1"
    assert claim.expires_at == EXPIRES


@given(st.text(min_size=1, max_size=80))
def test_any_survey_id_round_trips(survey_id: str) -> None:
    assert tokens.verify(tokens.sign(survey_id, EXPIRES, KEY), KEY, NOW).survey_id == survey_id


def test_expiry_edge() -> None:
    token = tokens.sign("SV-1", EXPIRES, KEY)
    assert tokens.verify(token, KEY, EXPIRES - timedelta(seconds=1)).survey_id == "SV-1"
    with pytest.raises(ExpiredToken) as err:
        tokens.verify(token, KEY, EXPIRES)
    assert err.value.status == 410


def test_other_key_is_forged() -> None:
    token = tokens.sign("SV-1", EXPIRES, b"x" * 32)
    with pytest.raises(InvalidToken) as err:
        tokens.verify(token, KEY, NOW)
    assert err.value.status == 403


def test_forged_token_is_refused_before_its_expiry_is_looked_at() -> None:
    token = tokens.sign("SV-1", NOW - timedelta(days=1), b"x" * 32)
    with pytest.raises(InvalidToken):
        tokens.verify(token, KEY, NOW)


def test_extending_the_expiry_breaks_the_signature() -> None:
    sid, expiry, sig = tokens.sign("SV-1", NOW + timedelta(seconds=5), KEY).split(".")
    stretched = f"{sid}.{int(expiry) + 86400}.{sig}"
    with pytest.raises(InvalidToken):
        tokens.verify(stretched, KEY, NOW)


def test_changing_the_survey_id_breaks_the_signature() -> None:
    _, expiry, sig = tokens.sign("SV-1", EXPIRES, KEY).split(".")
    other = tokens.sign("SV-2", EXPIRES, KEY).split(".")[0]
    with pytest.raises(InvalidToken):
        tokens.verify(f"{other}.{expiry}.{sig}", KEY, NOW)


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "a..c", "!!.1.!!", "a.1", "a.1.b.c", "x" * 2000, "QQ.\u00b2.QQ"]
)
def test_malformed_tokens_are_invalid(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.verify(garbage, KEY, NOW)


def test_answerable_once_and_only_before_expiry() -> None:
    check_answerable(SurveyStatus.SENT, EXPIRES, NOW)
    with pytest.raises(SurveyReused) as reused:
        check_answerable(SurveyStatus.SUBMITTED, EXPIRES, NOW)
    assert reused.value.status == 409
    with pytest.raises(ExpiredToken):
        check_answerable(SurveyStatus.SENT, EXPIRES, EXPIRES)


@pytest.mark.parametrize(("csat", "opens"), [(1, True), (2, True), (3, False), (5, False)])
def test_low_csat_opens_a_complaint(csat: int, opens: bool) -> None:
    assert opens_complaint(csat, 2) is opens


def test_summary_arithmetic() -> None:
    s = summarize(4, [(5, 10), (1, 0), (4, 7)])
    assert (s.sent, s.submitted) == (4, 3)
    assert s.response_rate == 0.75
    assert s.csat_average == pytest.approx(10 / 3, abs=1e-3)
    assert s.nps == pytest.approx(0.0)  # one promoter, one detractor, one passive
    empty = summarize(0, [])
    assert (empty.response_rate, empty.csat_average, empty.nps) == (None, None, None)


def test_dev_signing_key_refused_outside_development() -> None:
    tokens_env = '{"tttttttttttttttttttttttttttttttttttttttt": {"subject": "ops", "scopes": ["admin"]}}'
    with pytest.raises(ValidationError, match="signing key"):
        Settings(environment="production", api_tokens=tokens_env)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least"):
        Settings(environment="production", api_tokens=tokens_env, survey_signing_key="short")  # type: ignore[arg-type]
    ok = Settings(environment="production", api_tokens=tokens_env, survey_signing_key="s" * 40)  # type: ignore[arg-type]
    assert ok.survey_signing_key.get_secret_value() != DEV_SIGNING_KEY
    assert Settings(environment="development").survey_signing_key.get_secret_value() == DEV_SIGNING_KEY
    with pytest.raises(ValidationError, match="signing key"):  # test gets no dev key: the suite passes one
        Settings(environment="test", api_tokens=tokens_env)  # type: ignore[arg-type]
