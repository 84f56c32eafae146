"""Fixtures of the security suite: the real Kafka broker and database (as in tests/integration), a
platform per test, and one shared stack of all five services for the tests that only probe it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from followup_events import AROUND_THE_CLOCK
from harness import Infra, Platform, ServiceProcess, start_infra

from aftersales.shared.settings import DEVELOPMENT_TOKENS

# Tokens beyond the development set: a second technician and a second web gateway, to probe one
# caller against another's objects, and a Prometheus scraper's token.
EXTRA_TOKENS = {
    "other-technician-token": {"subject": "tech-other", "scopes": ["technician"]},
    "other-web-token": {"subject": "web-portal-2", "scopes": ["channel"], "channel": "web"},
    "scraper-token": {"subject": "prometheus", "scopes": ["metrics"]},
}
TOKENS = json.dumps({**DEVELOPMENT_TOKENS, **EXTRA_TOKENS})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def infra() -> Infra:
    return start_infra()


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Processes a test starts; each is stopped by its PID when the test ends, pass or fail."""
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(timeout_s=15)


@pytest.fixture
def platform(infra: Infra, processes: list[ServiceProcess]) -> Platform:
    return Platform(infra, processes)


@pytest.fixture(scope="module")
async def stack(infra: Infra) -> AsyncIterator[Platform]:
    """All five services with the extra tokens, started once for a module's probes."""
    started: list[ServiceProcess] = []
    platform = Platform(infra, started)
    try:
        await platform.start_ready(
            "intake",
            "routing",
            "followup",
            "feedback",
            "metrics",
            API_TOKENS=TOKENS,
            PUBLISH_REPORTS="false",
            CALLBACK_DELAY_S="0",
            **AROUND_THE_CLOCK,
        )
        yield platform
    finally:
        for proc in started:
            proc.stop(timeout_s=15)
