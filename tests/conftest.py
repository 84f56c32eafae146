"""Shared by tests/integration and tests/security: after each test, the services it ran must not have
logged a Python traceback or parked a message in a dead-letter topic, unless the test says so with
`@pytest.mark.expect_tracebacks("...")` / `@pytest.mark.expect_dlq("...")` naming what it expects."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from service_checks import before_test, opt_outs, parked, tracebacks


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
