"""Telemetry: OpenTelemetry tracing (OTLP only when configured), JSON logs with PII masking."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_PROVIDER: TracerProvider | None = None

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d ()-]{7,}\d(?![\w-])")


def mask_pii(text: str) -> str:
    """Return `text` with e-mail addresses, card numbers and phone numbers masked."""
    text = _EMAIL.sub(lambda m: m.group()[0] + "***@" + m.group().split("@", 1)[1], text)
    text = _CARD.sub(lambda m: "****" + re.sub(r"\D", "", m.group())[-4:], text)
    return _PHONE.sub(lambda m: "***" + re.sub(r"\D", "", m.group())[-4:], text)


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
                out[key] = mask_pii(value) if isinstance(value, str) else value
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
