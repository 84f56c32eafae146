"""`make bench`: run every benchmark on the real local Kafka broker and MongoDB-wire server; print figures.

    python -m benchmarks [name ...]     names: envelope, outbox, consumer, intake, routing

Each benchmark is bounded in count and time and prints one line per figure.
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks import platform_benches, shared_benches

BENCHES = {
    "envelope": shared_benches.envelope,
    "outbox": shared_benches.outbox_relay,
    "consumer": shared_benches.consumer,
    "intake": platform_benches.intake_http,
    "routing": platform_benches.routing_assignment,
}


async def main(names: list[str]) -> int:
    selected = names or list(BENCHES)
    unknown = [n for n in selected if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    for name in selected:
        print(f"== {name}")
        await BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
