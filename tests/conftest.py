"""Shared by tests/integration and tests/security: after each test, the services it ran must not have
logged a Python traceback or parked a message in a dead-letter topic, unless the test says so with
`@pytest.mark.expect_tracebacks("...")` / `@pytest.mark.expect_dlq("...")` naming what it expects.

Files marked `long_running(minutes=...)` are collected first, the longest first: `make test` spreads
whole files over its workers in collection order (xdist's --no-loadscope-reorder), and a file of
minutes started last is a tail that one worker runs while the others idle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from service_checks import before_test, opt_outs, parked, tracebacks


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def minutes(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long_running")
        return float(marker.kwargs["minutes"]) if marker else 0.0

    items.sort(key=minutes, reverse=True)  # stable: the files stay whole and in order otherwise


@pytest.fixture(autouse=True)
async def services_stay_clean(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    # Autouse fixtures are set up first, so this teardown runs after the processes were stopped: the
    # logs are complete and shutdown itself is checked too.
    skip = opt_outs(request.node)
    before = await before_test(check_dlq="expect_dlq" not in skip)
    yield
    problems = []
    if "expect_tracebacks" not in skip:
        problems += tracebacks(before)
    if "expect_dlq" not in skip:
        problems += await parked(before)
    if problems:
        pytest.fail(
            "the services of this test failed on the side (mark the test if that is expected):\n"
            + "\n".join(problems),
            pytrace=False,
        )
