from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from aftersales.shared.settings import Scope, ServiceSettings


def test_development_gets_development_tokens() -> None:
    grants = ServiceSettings(environment="development").token_grants()
    assert grants["dev-admin-token"].scopes == [Scope.ADMIN]


def test_production_refuses_development_tokens_and_missing_tokens() -> None:
    with pytest.raises(ValidationError, match="API_TOKENS must be set"):
        ServiceSettings(environment="production")
    shipped = json.dumps({"dev-admin-token": {"subject": "a", "scopes": ["admin"]}})
    with pytest.raises(ValidationError, match="development tokens are not allowed"):
        ServiceSettings(environment="production", api_tokens=shipped)


def test_production_accepts_its_own_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv(
        "API_TOKENS",
        json.dumps({"s3cret-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx": {"subject": "crm", "scopes": ["supervisor"]}}),
    )
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "prod.")
    settings = ServiceSettings()
    assert settings.token_grants()["s3cret-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"].subject == "crm"
    assert settings.topic("aftersales.tickets.v1") == "prod.aftersales.tickets.v1"
    assert "s3cret" not in repr(settings)


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ValidationError, match="kafka_partitions"):
        ServiceSettings(kafka_partitions=0)
    with pytest.raises(ValidationError, match="environment"):
        ServiceSettings(environment="prod")


def test_a_retry_budget_not_below_the_max_poll_interval_is_refused_naming_both() -> None:
    with pytest.raises(
        ValidationError, match="CONSUMER_RETRY_BUDGET_S must be below CONSUMER_MAX_POLL_INTERVAL_S"
    ):
        ServiceSettings(consumer_retry_budget_s=300.0, consumer_max_poll_interval_s=300.0)
    assert ServiceSettings(consumer_retry_budget_s=60.0, consumer_max_poll_interval_s=90.0)
