"""Remove what a benchmark run created: the platforms' databases and topics (BENCH_KEEP_DATA=1 keeps them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient
from harness import PIPELINE_SERVICE_NAMES, Infra, Platform, ServiceProcess, mongo


async def stop_all(processes: Iterable[ServiceProcess]) -> None:
    """Stop processes (each by its PID: SIGTERM, SIGKILL after 30 s) at the same time."""
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in list(processes)))


async def cleanup(infra: Infra, platforms: list[Platform], *, keep: bool) -> None:
    if keep or not platforms:
        if platforms:
            print("kept databases and topics of " + ", ".join(p.prefix for p in platforms))
        return
    client = mongo(infra)
    try:
        for platform in platforms:
            for service in PIPELINE_SERVICE_NAMES:
                try:
                    await client.drop_database(platform.database(service))
                except Exception as exc:
                    print(f"    (could not drop {platform.database(service)}: {exc!r:.100})")
    finally:
        await client.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka)
    try:
        await admin.start()
        prefixes = tuple(p.prefix for p in platforms)
        topics = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if topics:
            await admin.delete_topics(topics)
    except Exception as exc:
        print(f"    (could not delete the benchmark's topics: {exc!r:.100})")
    finally:
        await admin.close()
