"""What the benchmark observes besides HTTP answers: consumer lag of the platform's groups, Prometheus
counters of each service, and CPU time and RSS of processes from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from harness import Platform, auth

from aftersales.shared.contracts import Topic

GROUP_PREFIX = "aftersales-"
# Groups that must exist once a topic carries data, even before they commit: (service, topic).
EXPECTED = {
    ("routing", Topic.TICKETS.value),
    ("followup", Topic.TICKETS.value),
    ("feedback", Topic.TICKETS.value),
    ("metrics", Topic.TICKETS.value),
    ("intake", Topic.REQUESTS.value),
}

Samples = list[tuple[str, dict[str, str], float]]


def parse_prometheus(text: str) -> Samples:
    """Return (name, labels, value) of every sample of a Prometheus text exposition."""
    out: Samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, labels = head, {}
        if "{" in head:
            name, rest = head.split("{", 1)
            for item in rest.rstrip("}").split('",'):
                if "=" in item:
                    k, v = item.split("=", 1)
                    labels[k.strip(", ")] = v.strip('"')
        with contextlib.suppress(ValueError):
            out.append((name, labels, float(value)))
    return out


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10.0) as http:
        return parse_prometheus((await http.get(f"{url}/metrics", headers=auth())).text)


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


@dataclass
class LagProbe:
    """Consumer lag per (group, logical topic) of every aftersales-* group on one platform's topics."""

    bootstrap: str
    prefix: str
    seen: set[tuple[str, str]] = field(default_factory=set)  # pairs that ever committed (sticky)
    _admin: AIOKafkaAdminClient | None = None
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> LagProbe:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._admin.start()
        await self._consumer.start()
        return self

    async def stop(self) -> None:
        if self._consumer:
            await self._consumer.stop()
        if self._admin:
            await self._admin.close()

    async def lag(self) -> dict[tuple[str, str], int]:
        """Return lag per (group, logical topic); a group that never committed on a topic holding data
        counts that topic's whole length (for the pairs in EXPECTED or ever seen)."""
        assert self._admin is not None and self._consumer is not None
        physical = {f"{self.prefix}{t.value}": t.value for t in Topic}
        if any(not self._consumer.partitions_for_topic(t) for t in physical):
            await self._consumer._client.force_metadata_update()  # topics created since the last call
        partitions = [
            TopicPartition(topic, p)
            for topic in physical
            for p in self._consumer.partitions_for_topic(topic) or ()
        ]
        ends = await self._consumer.end_offsets(partitions) if partitions else {}
        mine = f"{self.prefix}{GROUP_PREFIX}"  # consumer groups carry the platform's topic prefix
        groups = [g[0] for g in await self._admin.list_consumer_groups() if str(g[0]).startswith(mine)]
        lag: dict[tuple[str, str], int] = {}
        for group in groups:
            offsets = await self._admin.list_consumer_group_offsets(group)
            committed = {tp: m.offset for tp, m in offsets.items() if tp.topic in physical and m.offset >= 0}
            label = group.removeprefix(self.prefix)
            for topic in {tp.topic for tp in committed}:
                self.seen.add((label, physical[topic]))
            for g, logical in self.seen:
                if g != label:
                    continue
                lag[(g, logical)] = sum(
                    max(end - committed.get(tp, 0), 0)
                    for tp, end in ends.items()
                    if physical[tp.topic] == logical
                )
        for service, logical in EXPECTED:
            if not any(g.startswith(f"{GROUP_PREFIX}{service}") and t == logical for g, t in lag):
                length = sum(end for tp, end in ends.items() if physical[tp.topic] == logical)
                if length:
                    lag[(f"{GROUP_PREFIX}{service}", logical)] = length
        return lag

    async def behind(self) -> int:
        return sum((await self.lag()).values())

    async def lag_safe(self) -> dict[tuple[str, str], int]:
        """lag(), or {("?", "lag unknown: <error>"): -1} when Kafka does not answer."""
        try:
            return await self.lag()
        except Exception as exc:
            return {("?", f"lag unknown: {exc!r:.80}"): -1}

    async def behind_safe(self) -> int:
        """behind(), or -1 when Kafka does not answer (never mistaken for 0)."""
        return sum((await self.lag_safe()).values())


async def wait_swept(urls: list[str], timeout_s: float = 600.0) -> float:
    """Wait until every service at `urls` has registered its outbox relay and swept whatever a relay
    that died left behind (on FerretDB a sweep reads every document of its outbox collections); return
    the seconds waited. A stage that measures a steady state (idle CPU, search latency) starts after it."""
    started = time.monotonic()
    pending = list(urls)
    while pending and time.monotonic() - started < timeout_s:
        pending = [u for u in pending if total(await scrape(u), "aftersales_outbox_started") < 1]
        if pending:
            await asyncio.sleep(1.0)
    if pending:
        raise TimeoutError(f"outbox relay not started after {timeout_s:.0f} s: {pending}")
    return time.monotonic() - started


async def wait_drained(probe: LagProbe, timeout_s: float, interval_s: float = 0.5) -> float | None:
    """Wait until every group is at lag 0; return the seconds it took, or None at the deadline."""
    started = time.monotonic()
    while True:
        if await probe.behind_safe() == 0:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout_s:
            return None
        await asyncio.sleep(interval_s)


# ---------------------------------------------------------------- processes


def cache_dir() -> Path:
    base = os.environ.get("AFTERSALES_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aftersales"


def infra_pids() -> dict[str, int]:
    """PIDs of the local database and Kafka started by deploy/local/infra.sh (when they are alive)."""
    out: dict[str, int] = {}
    for name, label in (("db", "database"), ("kafka", "kafka")):
        try:
            pid = int((cache_dir() / "run" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            out[label] = pid
    return out


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (and its waited-for children), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def service_pids(platform: Platform) -> dict[str, int]:
    return {name: p.proc.pid for name, p in platform.services.items() if p.proc and p.proc.poll() is None}


@dataclass
class RssSampler:
    """Samples VmRSS of processes in the background; keeps the peak of each."""

    pids: dict[str, int]
    interval_s: float = 0.5
    peak: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def sample(self) -> None:
        for name, pid in self.pids.items():
            mb = rss_mb(pid)
            if mb is not None:
                self.peak[name] = max(self.peak.get(name, 0.0), mb)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> dict[str, float]:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.sample()
        return dict(self.peak)


def cpu_percent(
    before: dict[str, float | None], after: dict[str, float | None], seconds: float
) -> dict[str, float]:
    """CPU % (100 = one core) per name between two cpu_seconds() readings."""
    out: dict[str, float] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is not None and end is not None and seconds > 0:
            out[name] = 100.0 * (end - start) / seconds
    return out


def read_cpu(pids: dict[str, int]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def names_of(pids: Iterable[int]) -> list[str]:
    return [process_name(p) for p in pids]
