"""/readyz while the database is frozen (SIGSTOP: connections stay open and get no answer). It freezes
the shared server, so `make test` runs it alone, after the tests that run side by side."""

from __future__ import annotations

import os
import signal

import httpx
from harness import Platform, infra_pid, wait_until


async def test_readyz_is_503_while_the_database_does_not_answer(platform: Platform) -> None:
    intake = (await platform.start_ready("intake"))["intake"]
    db = infra_pid("db")
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        os.kill(db, signal.SIGSTOP)  # frozen, not gone: connections stay open and get no answer
        try:
            frozen = await client.get("/readyz")  # the database ping gives up after 2 s
        finally:
            os.kill(db, signal.SIGCONT)
        assert frozen.status_code == 503, frozen.text
        assert frozen.json()["checks"] == {"mongodb": False, "kafka": True, "consumers": True, "outbox": True}

        async def ready_again() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await wait_until("/readyz 200 once the database answers again", ready_again)
