"""Benchmarks of the services as real processes (filled in as the services land)."""

from __future__ import annotations


async def intake_http() -> None:
    print("intake: not available yet")


async def routing_assignment() -> None:
    print("routing: not available yet")
