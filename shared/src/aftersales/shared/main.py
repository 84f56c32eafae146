"""Process entry point shared by every service: settings, logging, tracing, pre-flight checks, uvicorn.

A bad configuration or unreachable infrastructure ends the process with one clear line on stderr and a
non-zero exit code, never a traceback wall.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from aftersales.shared.envelope import validation_summary
from aftersales.shared.runtime import InfrastructureUnreachable, check_infrastructure, http_drain_s
from aftersales.shared.settings import ServiceSettings
from aftersales.shared.telemetry import configure_logging, configure_tracing

S = TypeVar("S", bound=ServiceSettings)

EXIT_BAD_CONFIG = 2
EXIT_UNREACHABLE = 3


def run_service(name: str, settings_type: type[S], build_app: Callable[[S], FastAPI]) -> None:
    """Load settings, check Kafka and MongoDB, then serve HTTP until SIGTERM/SIGINT (graceful)."""
    try:
        settings = settings_type()
    except (ValidationError, ValueError) as exc:
        reason = validation_summary(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"aftersales-{name}: invalid configuration: {reason}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)
    configure_logging(name, settings.log_level)
    configure_tracing(name, settings.otel_exporter_otlp_endpoint)
    try:
        asyncio.run(check_infrastructure(settings))
    except InfrastructureUnreachable as exc:
        print(f"aftersales-{name}: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNREACHABLE)
    app = build_app(settings)
    # uvicorn handles SIGTERM (graceful shutdown), then raises it again against the handler it found at
    # start, so with the default one the process ends "killed by SIGTERM" (-15) after a clean shutdown
    # and nobody can tell it from a kill. The shutdown is complete by then: ignore that second signal,
    # so a graceful stop exits 0.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=http_drain_s(settings),  # the runtime stops in the rest of the grace
    )
