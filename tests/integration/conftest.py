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
    """Processes a test starts; each is stopped by its PID when the test ends, pass or fail.

    A process the test did not end itself (kill, stop, wait_exit) must still be running and must shut
    down cleanly on SIGTERM: exit code 0. One that died during the test, or whose shutdown failed,
    fails the test."""
    started: list[ServiceProcess] = []
    yield started
    failures = []
    for proc in started:
        died = not proc.running()
        code = proc.terminate(timeout_s=15)
        if not proc.ended_by_test and code != 0:
            when = "died during the test" if died else "did not shut down cleanly on SIGTERM"
            failures.append(f"{proc.name} {when}: exit code {code}\n{proc.tail(15)}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def platform(infra: Infra, processes: list[ServiceProcess]):  # type: ignore[no-untyped-def]
    """A fresh topic prefix and databases for this test; start services with platform.start_ready(...)."""
    from harness import Platform

    return Platform(infra, processes)
