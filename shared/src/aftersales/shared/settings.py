"""Settings base: every service reads its configuration from environment variables, validated at start-up."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Scope(StrEnum):
    """What a bearer token may do."""

    CHANNEL = "channel"
    TECHNICIAN = "technician"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class TokenGrant(BaseModel):
    """Who a bearer token belongs to and what it may do."""

    subject: str = Field(min_length=1, description="the caller's id: a channel gateway, technician or user")
    scopes: list[Scope] = Field(min_length=1)
    channel: str | None = Field(default=None, description="for channel tokens: the channel they speak for")


# Development tokens, refused outside ENVIRONMENT=development so nobody ships them.
DEVELOPMENT_TOKENS: dict[str, dict[str, Any]] = {
    "dev-admin-token": {"subject": "admin", "scopes": ["admin"]},
    "dev-supervisor-token": {"subject": "supervisor-1", "scopes": ["supervisor"]},
    "dev-web-token": {"subject": "web-portal", "scopes": ["channel"], "channel": "web"},
    "dev-phone-token": {"subject": "phone-desk", "scopes": ["channel"], "channel": "phone"},
    "dev-iot-token": {"subject": "iot-gateway", "scopes": ["channel"], "channel": "iot"},
    "dev-technician-token": {"subject": "tech-demo", "scopes": ["technician"]},
}


class ServiceSettings(BaseSettings):
    """Configuration common to every service; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", validate_default=True)

    service_name: str = "aftersales"
    environment: str = Field(default="development", description="development, staging or production")
    http_host: str = Field(default="127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    http_port: int = Field(
        default=8000, ge=1, le=65535, description="HTTP port (each service has its own default)"
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka brokers, comma-separated"
    )
    kafka_topic_prefix: str = Field(
        default="", description="prepended to every topic name, to share one cluster between environments"
    )
    kafka_partitions: int = Field(
        default=12, ge=1, le=1000, description="partitions of topics this service creates"
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, le=7, description="replication of topics it creates"
    )
    kafka_connect_timeout_s: float = Field(
        default=20.0, gt=0, description="give up reaching Kafka after this"
    )

    mongodb_uri: SecretStr = Field(
        default=SecretStr("mongodb://127.0.0.1:27017/"), description="MongoDB connection URI"
    )
    mongodb_database: str = Field(default="", description="database name; default aftersales_<service>")
    mongodb_connect_timeout_s: float = Field(
        default=10.0, gt=0, description="give up reaching MongoDB after this"
    )
    mongodb_socket_timeout_s: float = Field(
        default=30.0, gt=0, description="a database call that has not answered after this fails (retried)"
    )

    consumer_max_attempts: int = Field(
        default=4, ge=1, le=20, description="tries before a message goes to the DLQ"
    )
    consumer_backoff_s: float = Field(
        default=0.2, ge=0, description="first retry delay; doubles each attempt"
    )
    consumer_batch_max_records: int = Field(
        default=500, ge=1, le=10_000, description="records a consumer takes from Kafka per batch"
    )
    consumer_concurrency: int = Field(
        default=16, ge=1, le=256, description="tickets (Kafka keys) of one batch handled at once"
    )
    consumer_handler_timeout_s: float = Field(
        default=30.0, gt=0, description="a handler call running longer is cancelled and retried"
    )
    consumer_retry_budget_s: float = Field(
        default=60.0,
        gt=0,
        description="how long a batch retries transient faults before it is handed back to Kafka "
        "(re-polled later; keep it below the consumer's max poll interval of 300 s)",
    )
    outbox_poll_interval_s: float = Field(default=0.5, gt=0, description="outbox relay idle wait")
    outbox_sweep_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="how often the relay scans for events a crash left unpublished (also at start-up)",
    )
    timer_poll_interval_s: float = Field(default=1.0, gt=0, description="how often due timers are checked")
    timer_scan_interval_s: float = Field(
        default=15.0, gt=0, description="how often timers scheduled by other replicas are looked for"
    )
    timer_lease_s: float = Field(
        default=60.0, gt=0, description="a fired timer is retried by another replica after this"
    )
    shutdown_grace_s: float = Field(default=20.0, gt=0, description="graceful shutdown budget after SIGTERM")

    api_tokens: SecretStr = Field(
        default=SecretStr(""),
        description='JSON object {"<token>": {"subject": ..., "scopes": [...], "channel": ...}}',
    )
    otel_exporter_otlp_endpoint: str = Field(
        default="", description="OTLP/HTTP endpoint; traces exported only when set"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR (JSON lines on stdout)")

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in {"development", "test", "staging", "production"}:
            raise ValueError("must be one of development, test, staging, production")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_tokens(self) -> Self:
        grants = self.token_grants()
        if self.environment not in {"development", "test"}:
            shipped = set(grants) & set(DEVELOPMENT_TOKENS)
            if shipped:
                raise ValueError(f"development tokens are not allowed in {self.environment}: set API_TOKENS")
            if not grants:
                raise ValueError(f"API_TOKENS must be set in {self.environment}")
        return self

    def token_grants(self) -> dict[str, TokenGrant]:
        """Return the configured tokens, or the development tokens when none are configured in development."""
        raw = self.api_tokens.get_secret_value().strip()
        if not raw:
            source: dict[str, Any] = DEVELOPMENT_TOKENS if self.environment in {"development", "test"} else {}
        else:
            try:
                source = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"API_TOKENS is not valid JSON: {exc.msg}") from None
            if not isinstance(source, dict):
                raise ValueError("API_TOKENS must be a JSON object of token -> grant")
        return {token: TokenGrant.model_validate(grant) for token, grant in source.items()}

    def topic(self, name: str) -> str:
        """Return the physical topic name for a logical one (prefix applied)."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def database_name(self) -> str:
        """Return this service's own database name."""
        return self.mongodb_database or f"aftersales_{self.service_name}"
