"""How every Kafka client of a service authenticates and encrypts: TLS and SASL (PLAIN, SCRAM) from
settings, for FastStream's broker and for the plain aiokafka clients (admin, lag reader)."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from aftersales.shared.settings import ServiceSettings


def ssl_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """Return the TLS context for SSL and SASL_SSL (system CAs unless KAFKA_SSL_CAFILE), else None."""
    if settings.kafka_security_protocol not in {"SSL", "SASL_SSL"}:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """Return the keyword arguments that make an aiokafka client (producer, consumer, admin) connect
    with the configured protocol; empty for PLAINTEXT, so the defaults stay untouched."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    """Return FastStream's security object for the broker (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    use_ssl = protocol == "SASL_SSL"
    kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    return kinds[settings.kafka_sasl_mechanism](
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=use_ssl,
    )
