"""Session fixtures: the real Kafka broker and MongoDB-wire server, started once (or reused)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Infra, ServiceProcess, start_infra


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def platform(infra: Infra, processes: list[ServiceProcess]):  # type: ignore[no-untyped-def]
    """A fresh topic prefix and databases for this test; start services with platform.start_ready(...)."""
    from harness import Platform

    return Platform(infra, processes)
