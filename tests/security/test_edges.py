"""Credentials and exposure at the HTTP edge, on the real app objects in-process (no servers needed):
tokens as digests compared in constant time, a minimum length in production, no development tokens or
keys outside development, docs and /metrics exposure, per-token rate limits, unknown query parameters."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from aftersales.feedback.app import Settings as FeedbackSettings
from aftersales.intake.app import Settings as IntakeSettings
from aftersales.intake.app import build
from aftersales.shared.auth import TokenRegistry
from aftersales.shared.settings import Scope, ServiceSettings, TokenGrant, hash_token

LONG = "L" * 40
KEY = "k" * 40
TOKENS = {
    LONG: {"subject": "admin", "scopes": ["admin"]},
    "web-gateway-token-" + "w" * 20: {"subject": "web", "scopes": ["channel"], "channel": "web"},
    "sha256:" + hashlib.sha256(b"scraper-secret-" + b"s" * 20).hexdigest(): {
        "subject": "prometheus",
        "scopes": ["metrics"],
    },
}
SCRAPER = "scraper-secret-" + "s" * 20


def app(**settings: Any) -> httpx.AsyncClient:
    env = {
        "environment": "production",
        "api_tokens": json.dumps(TOKENS),
        "customer_id_key": KEY,
        **settings,
    }
    service = build(IntakeSettings(**env))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service), base_url="http://intake")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- tokens and keys


def test_tokens_are_kept_as_digests_and_compared_with_every_one() -> None:
    registry = TokenRegistry.of(ServiceSettings(environment="production", api_tokens=json.dumps(TOKENS)))  # type: ignore[arg-type]
    assert all(LONG not in repr(entry) for entry in registry._entries)
    assert registry._entries[0][0] == hash_token(LONG)
    found = registry.lookup(LONG)
    assert found is not None and found[1].subject == "admin" and LONG not in found[0]
    assert registry.lookup(SCRAPER) is not None  # a token configured only as its sha256 digest
    assert registry.lookup(LONG[:-1]) is None and registry.lookup("") is None


def test_lookup_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stored digest is compared with hmac.compare_digest, whether the token matches or not."""
    import aftersales.shared.auth as auth

    calls: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    grant = TokenGrant(subject="s", scopes=[Scope.ADMIN])
    registry = TokenRegistry([(hash_token(f"token-{i}"), grant) for i in range(5)])
    registry.lookup("token-0")
    registry.lookup("nope")
    assert len(calls) == 10


def test_production_refuses_short_development_and_malformed_tokens() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        ServiceSettings(environment="production", api_tokens=json.dumps({"x": TOKENS[LONG]}))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="development tokens"):
        ServiceSettings(
            environment="staging",
            api_tokens=json.dumps({"dev-admin-token": TOKENS[LONG]}),  # type: ignore[arg-type]
        )
    with pytest.raises(ValidationError, match="hashed token"):
        ServiceSettings(environment="production", api_tokens=json.dumps({"sha256:abc": TOKENS[LONG]}))  # type: ignore[arg-type]


def test_test_environment_enables_no_development_tokens_or_keys() -> None:
    with pytest.raises(ValidationError, match="API_TOKENS must be set in test"):
        ServiceSettings(environment="test")
    tokens = json.dumps({"dev-web-token": TOKENS[LONG]})
    assert set(ServiceSettings(environment="test", api_tokens=tokens).token_grants()) == {"dev-web-token"}  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="survey signing key"):
        FeedbackSettings(environment="test", api_tokens=tokens)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="customer id key"):
        IntakeSettings(environment="test", api_tokens=tokens)  # type: ignore[arg-type]
    assert "dev-admin-token" in ServiceSettings(environment="development").token_grants()


def test_production_refuses_public_docs_and_metrics() -> None:
    for name in ("http_docs", "http_metrics"):
        with pytest.raises(ValidationError, match="not allowed in production"):
            IntakeSettings(
                environment="production",
                api_tokens=json.dumps(TOKENS),
                customer_id_key=KEY,
                **{name: "public"},
            )  # type: ignore[arg-type]


# ---------------------------------------------------------------- docs and metrics exposure


async def test_docs_are_off_and_metrics_need_a_scraper_token_by_default_in_production() -> None:
    async with app() as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/asyncapi.json"):
            assert (await client.get(path, headers=bearer(LONG))).status_code == 404, path
        assert (await client.get("/metrics")).status_code == 401
        web = bearer("web-gateway-token-" + "w" * 20)
        assert (await client.get("/metrics", headers=web)).status_code == 403
        scraped = await client.get("/metrics", headers=bearer(SCRAPER))
        assert scraped.status_code == 200 and "aftersales_http_requests_total" in scraped.text
        assert (await client.get("/healthz")).status_code == 200  # probes stay open


async def test_authenticated_docs_need_a_token_and_off_metrics_are_gone() -> None:
    async with app(http_docs="authenticated", http_metrics="off") as client:
        assert (await client.get("/openapi.json")).status_code == 401
        spec = await client.get("/openapi.json", headers=bearer(LONG))
        assert spec.status_code == 200 and "/v1/tickets" in spec.json()["paths"]
        assert (await client.get("/docs", headers=bearer(LONG))).status_code == 404  # HTML only when public
        assert (await client.get("/metrics", headers=bearer(LONG))).status_code == 404


async def test_422_is_documented_as_the_body_it_really_is() -> None:
    async with app(http_docs="authenticated") as client:
        spec = (await client.get("/openapi.json", headers=bearer(LONG))).json()
    error = spec["components"]["schemas"]["HTTPValidationError"]
    assert (
        set(error["required"]) == {"error", "message"}
        and "ValidationError" not in spec["components"]["schemas"]
    )


# ---------------------------------------------------------------- unknown filters and rate limits


@pytest.mark.parametrize("query", [{"priority": "P9"}, {"q": "zzz"}, {"status": "new", "sort": "x"}])
async def test_unknown_query_parameters_are_refused_naming_them(query: dict[str, str]) -> None:
    async with app() as client:
        response = await client.get("/v1/tickets", params=query, headers=bearer(LONG))
    assert response.status_code == 422
    unknown = next(k for k in query if k != "status")
    assert response.json()["field"] == unknown and unknown in response.json()["message"]


async def test_each_token_has_its_own_rate_limit() -> None:
    web = bearer("web-gateway-token-" + "w" * 20)
    async with app(rate_limit="3/minute") as client:
        codes = [
            (await client.get("/v1/tickets", params={"x": "1"}, headers=web)).status_code for _ in range(4)
        ]
        assert codes == [422, 422, 422, 429]
        limited = await client.get("/v1/tickets", headers=web)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] == "rate_limited"
        # another token is not slowed down by the first one
        assert (await client.get("/v1/tickets", params={"x": "1"}, headers=bearer(LONG))).status_code == 422
        # guessing tokens is limited per client address
        guesses = [
            (await client.get("/v1/tickets", headers=bearer(f"guess-{i}"))).status_code for i in range(4)
        ]
        assert guesses == [401, 401, 401, 429]
