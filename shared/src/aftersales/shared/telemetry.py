"""Telemetry: OpenTelemetry tracing (OTLP only when configured), JSON logs with PII masking."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from aftersales.shared.pii import mask_pii, mask_value

__all__ = ["JsonFormatter", "configure_logging", "configure_tracing", "mask_pii", "tracer_provider"]

_PROVIDER: TracerProvider | None = None


def tracer_provider() -> TracerProvider:
    """Return the process's tracer provider (created once)."""
    global _PROVIDER
    if _PROVIDER is None:
        _PROVIDER = TracerProvider(resource=Resource.create({"service.name": "aftersales"}))
    return _PROVIDER


def configure_tracing(service_name: str, otlp_endpoint: str) -> TracerProvider:
    """Set up the tracer provider for a service; export over OTLP/HTTP only when an endpoint is set."""
    global _PROVIDER
    provider = TracerProvider(resource=Resource.create({"service.name": f"aftersales-{service_name}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces"))
        )
    _PROVIDER = provider
    trace.set_tracer_provider(provider)
    return provider


_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace id and every message and extra field masked."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": mask_pii(record.getMessage()),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = mask_value(value)
        if record.exc_info:
            out["error"] = mask_pii(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log record to stdout as masked JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "pymongo", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # FastStream logs every message received at INFO; keep only its warnings and errors.
    logging.getLogger(f"aftersales.{service}.faststream").setLevel(logging.WARNING)
