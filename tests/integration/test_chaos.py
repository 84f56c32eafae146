"""The short chaos run inside `make test`: 400 tickets and 200 IoT alerts, half of the work orders
accepted by their technician as assigned, every service SIGKILLed once and restarted, the broker
restarted, the database frozen; then zeros where zeros belong (see chaos.py). The technicians hold
240 work orders at most, so they fill up during the load and the rest queue: the queue drains as
cancellations and escalations free slots, under the same kills, and the capacity check from the event
history (chaos_capacity.py) judges technicians that were full.

1,000 tickets at 25 a second with 30 slots each passed alone (171 s) and inside two `.ci/run`s (203 s,
269 s), then failed in a third: every figure zero but 5,225 events of lag left after the 300 s drain,
the broker restart having come at the load's end (2026-12-02, not yet explained). 2,000 tickets took
426 s. Until that stall is understood, the suite keeps this size. The full run is `make chaos`."""

from __future__ import annotations

import pytest
from chaos import Config, execute


@pytest.mark.timeout(600)  # above the suite's 300 s: the drain and the checks follow 20 s of load
@pytest.mark.expect_dlq("malformed messages injected on every consumed topic")
@pytest.mark.expect_tracebacks("services SIGKILLed, the broker restarted and the database frozen mid-stream")
async def test_nothing_lost_nothing_doubled_nothing_stuck_under_kills() -> None:
    cfg = Config(
        tickets=400,
        rate_per_s=20.0,
        alerts=200,
        devices=10,
        kills_per_service=1,
        restart_kafka=True,
        db_pause_s=5.0,
        poison_per_topic=2,
        technicians=20,
        capacity=12,  # 20 x 12 = 240 slots for ~410 tickets
        drain_timeout_s=300.0,
        first_response_minutes=0.5,  # SLA timers of every ticket fall due within the run
        accept_share=0.5,  # half accepted as assigned (accepts racing timers), half run their clocks out
    )
    run, findings = await execute(cfg)
    print("\n".join(run.chaos_log))
    print(findings.table())
    assert findings.figures["requests_accepted"] == cfg.tickets, findings.table()
    assert findings.ok, findings.table()
    assert findings.figures["technicians_filled"] > 0, "the capacity never bound: the check proved nothing"
