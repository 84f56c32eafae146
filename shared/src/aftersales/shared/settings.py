"""Settings base: every service reads its configuration from environment variables, validated at start-up."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Scope(StrEnum):
    """What a bearer token may do."""

    CHANNEL = "channel"
    TECHNICIAN = "technician"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    METRICS = "metrics"  # reads /metrics only (a Prometheus scraper's token)


class TokenGrant(BaseModel):
    """Who a bearer token belongs to and what it may do."""

    subject: str = Field(min_length=1, description="the caller's id: a channel gateway, technician or user")
    scopes: list[Scope] = Field(min_length=1)
    channel: str | None = Field(default=None, description="for channel tokens: the channel they speak for")


# Development tokens: used on their own only in ENVIRONMENT=development, refused in staging and production.
# ENVIRONMENT=test gets no tokens unless API_TOKENS names them (the test suite passes these explicitly).
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
    kafka_publish_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="a publish not acknowledged by then fails (and is retried); failing for twice as "
        "long recreates the producer (aiokafka's idempotent producer may never recover by itself)",
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
    mongodb_scan_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="how long one scan of a whole collection may take (the outbox sweep and the timer "
        "scan, which run on evidence, rarely): on FerretDB they read every document, longer than a "
        "socket timeout once a collection is large",
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
    consumer_partition_fetch_bytes: int = Field(
        default=256 * 1024,
        ge=64 * 1024,
        le=64 * 1024 * 1024,
        description="bytes a consumer fetches from one partition at a time: with a backlog, each consumer "
        "holds up to this much per partition it has (a record larger than it still comes whole)",
    )
    consumer_fetch_max_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="bytes one fetch of a consumer brings back, at most (Kafka's default is 50 MiB)",
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
        "(re-polled from each partition's first unfinished record; keep it below "
        "CONSUMER_MAX_POLL_INTERVAL_S)",
    )
    consumer_max_poll_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="the longest a consumer may go without polling before Kafka takes its partitions "
        "away (max.poll.interval.ms); /readyz is red for a consumer idle longer than this (a stuck handler)",
    )
    outbox_poll_interval_s: float = Field(default=0.5, gt=0, description="outbox relay idle wait")
    outbox_heartbeat_s: float = Field(
        default=10.0,
        gt=0,
        description="how often a relay renews its lease and looks for relays that died (their events "
        "are swept once a lease misses three heartbeats)",
    )
    outbox_sweep_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="a sweep for unpublished events on a clock as well, in seconds (0: only when a relay "
        "died or a write went unconfirmed; on FerretDB a sweep reads every document)",
    )
    timer_poll_interval_s: float = Field(default=1.0, gt=0, description="how often due timers are checked")
    timer_scan_interval_s: float = Field(
        default=0.0,
        ge=0,
        description="a scan for timers other replicas scheduled on a clock as well, in seconds (0: only "
        "at start-up and when a process went away or a write went unconfirmed; the scan reads every "
        "pending timer)",
    )
    timer_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="a timer whose replica stopped renewing its lease (renewed every third of it while "
        "the handler runs) is fired by another replica after this",
    )
    timer_handler_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="a timer handler running longer is cut and retried"
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
    def _budget_within_poll_interval(self) -> Self:
        if self.consumer_retry_budget_s >= self.consumer_max_poll_interval_s:
            raise ValueError(
                "CONSUMER_RETRY_BUDGET_S must be below CONSUMER_MAX_POLL_INTERVAL_S: a batch still retrying "
                "when Kafka takes the partitions away would be handled twice"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_tokens(self) -> Self:
        grants = self.token_grants()
        if self.environment != "development" and not grants:
            raise ValueError(f"API_TOKENS must be set in {self.environment}")
        if self.environment in {"staging", "production"}:
            shipped = set(grants) & set(DEVELOPMENT_TOKENS)
            if shipped:
                raise ValueError(f"development tokens are not allowed in {self.environment}: set API_TOKENS")
            short = [t for t in grants if not t.startswith(HASHED_TOKEN_PREFIX) and len(t) < MIN_TOKEN_CHARS]
            if short:
                raise ValueError(
                    f"API_TOKENS: every token must be at least {MIN_TOKEN_CHARS} characters in "
                    f"{self.environment} ({len(short)} shorter); generate one with `openssl rand -hex 32`"
                )
        for token in grants:
            if token.startswith(HASHED_TOKEN_PREFIX) and not _is_sha256_hex(
                token[len(HASHED_TOKEN_PREFIX) :]
            ):
                raise ValueError(f"API_TOKENS: a hashed token is {HASHED_TOKEN_PREFIX}<64 hex digits>")
        return self

    def token_grants(self) -> dict[str, TokenGrant]:
        """Return the configured tokens, or the development tokens when none are configured in development."""
        raw = self.api_tokens.get_secret_value().strip()
        if not raw:
            source: dict[str, Any] = DEVELOPMENT_TOKENS if self.environment == "development" else {}
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

    # ------------------------------------------------------------ security of the edges (issue 13)

    http_docs: Literal["public", "authenticated", "off"] | None = Field(
        default=None,
        description="/docs, /redoc, /openapi.json and /asyncapi.json: public, authenticated (any valid "
        "token) or off; default public in development and test, off in staging and production "
        "(public is refused in production)",
    )
    http_metrics: Literal["public", "authenticated", "off"] | None = Field(
        default=None,
        description="/metrics: public, authenticated (a token with the metrics or admin scope) or off; "
        "default public in development and test, authenticated in staging and production "
        "(public is refused in production)",
    )
    rate_limit: str = Field(
        default="1200/minute;100/second",
        description="requests allowed per bearer token (per client address for unauthenticated "
        "routes), in the `limits` notation, e.g. '600/minute;20/second'; empty turns it off. "
        "Counted per replica unless RATE_LIMIT_STORAGE_URI is shared",
    )
    rate_limit_storage_uri: str = Field(
        default="async+memory://",
        description="where rate-limit counters live: async+memory:// (per replica) or a shared "
        "async+redis://host:6379 (see the `limits` library)",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how clients reach Kafka; SASL_SSL (SCRAM over TLS) in production"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism for SASL_PLAINTEXT and SASL_SSL"
    )
    kafka_sasl_username: str = Field(default="", description="SASL user of this service")
    kafka_sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password (secret)")
    kafka_ssl_cafile: str = Field(
        default="", description="PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL)"
    )
    kafka_ssl_certfile: str = Field(default="", description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: str = Field(default="", description="private key (PEM) of the client certificate")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="verify that a broker's certificate names the host connected to"
    )

    @model_validator(mode="after")
    def _secure_edges(self) -> Self:
        if self.environment == "production":
            for name in ("http_docs", "http_metrics"):
                if getattr(self, name) == "public":
                    raise ValueError(f"{name.upper()}=public is not allowed in production")
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()
        ):
            raise ValueError(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with "
                f"{self.kafka_security_protocol}"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.rate_limit.strip():
            from limits import parse_many

            try:
                parse_many(self.rate_limit)
            except ValueError:
                raise ValueError(
                    f"RATE_LIMIT {self.rate_limit!r} is not like '600/minute;20/second'"
                ) from None
        return self

    def docs_exposure(self) -> str:
        """Return how /docs, /redoc, /openapi.json and /asyncapi.json are served."""
        return self.http_docs or ("public" if self.environment in {"development", "test"} else "off")

    def metrics_exposure(self) -> str:
        """Return how /metrics is served."""
        return self.http_metrics or (
            "public" if self.environment in {"development", "test"} else "authenticated"
        )

    def token_digests(self) -> list[tuple[bytes, TokenGrant]]:
        """Return (SHA-256 of the token, grant) for every configured token; plain tokens are hashed here,
        `sha256:<hex>` entries are taken as they are, so a deployment need not store tokens in the clear."""
        out = []
        for token, grant in self.token_grants().items():
            if token.startswith(HASHED_TOKEN_PREFIX):
                out.append((bytes.fromhex(token[len(HASHED_TOKEN_PREFIX) :]), grant))
            else:
                out.append((hash_token(token), grant))
        return out


HASHED_TOKEN_PREFIX = "sha256:"
MIN_TOKEN_CHARS = 32


def hash_token(token: str) -> bytes:
    """Return the SHA-256 digest a bearer token is stored and compared as."""
    return hashlib.sha256(token.encode()).digest()


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)
