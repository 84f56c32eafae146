"""Integration harness: real Kafka + MongoDB-wire server, services as real processes, waits with deadlines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pymongo import AsyncMongoClient
from topics import *  # noqa: F403  (the topic helpers: tests import them from the harness)

from aftersales.shared.settings import DEVELOPMENT_TOKENS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "deploy" / "local" / "infra.sh"
INFRA_RUN = (
    Path(
        os.environ.get("AFTERSALES_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aftersales"
    )
    / "run"
)  # where infra.sh keeps kafka.pid and db.pid
LOG_DIR = ROOT / ".test-logs"

T = TypeVar("T")


@dataclass(frozen=True)
class Infra:
    kafka: str
    mongodb_uri: str


def start_infra() -> Infra:
    """Start (or reuse) the local Kafka broker and MongoDB-wire server; return their addresses."""
    subprocess.run(["bash", str(INFRA), "start"], check=True, timeout=900)
    env = dict(
        line.split("=", 1)
        for line in subprocess.run(
            ["bash", str(INFRA), "env"], check=True, capture_output=True, text=True
        ).stdout.split()
    )
    return Infra(kafka=env["KAFKA_BOOTSTRAP_SERVERS"], mongodb_uri=env["MONGODB_URI"])


def infra_pid(name: str) -> int:
    """Return the PID of the local `kafka` or `db` server that infra.sh started (to pause it)."""
    path = INFRA_RUN / f"{name}.pid"
    assert path.exists(), f"{path} missing: this test needs the {name} server infra.sh runs locally"
    return int(path.read_text().split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def wait_until(
    what: str, check: Callable[[], Awaitable[T | None]], timeout_s: float = 30.0, interval_s: float = 0.2
) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


@dataclass(eq=False)
class ServiceProcess:
    """One service (or probe) as a real OS process, stopped by its PID."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    log_offset: int = 0  # the log file is appended to (a port can come back): this run's part starts here
    ended_by_test: bool = False  # the test killed, stopped or awaited it, so its exit code is the test's

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def topic_prefix(self) -> str:
        return self.env.get("KAFKA_TOPIC_PREFIX", "")

    def start(self) -> ServiceProcess:
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}-{self.port}.log"
        log = self.log_path.open("ab")
        self.log_offset = log.tell()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        STARTED.append(self)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, since: int | None = None) -> str:
        """Return what this run wrote to its log (from byte `since`, default: from its start)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_offset if since is None else since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return self.log_offset

    async def wait_ready(self, timeout_s: float = 60.0) -> ServiceProcess:
        async with httpx.AsyncClient(timeout=2.0) as client:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(f"{self.name} /readyz", ready, timeout_s)
        return self

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        self.ended_by_test = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout_s: float) -> int:
        """Wait for a process the test expects to end by itself (a crash probe); return its exit code."""
        assert self.proc is not None
        self.ended_by_test = True
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (graceful shutdown); SIGKILL if it does not stop in time."""
        self.ended_by_test = True
        return self.terminate(timeout_s)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """Like `stop`, for the fixtures that clean up after a test (the exit code is then theirs)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# Every process the suite started, in order: the after-test checks read their logs and DLQs.
STARTED: list[ServiceProcess] = []


# ENVIRONMENT=test gives a service no tokens or keys of its own: the suite passes them explicitly.
TEST_TOKENS = json.dumps(DEVELOPMENT_TOKENS)
TEST_SURVEY_SIGNING_KEY = "test-suite-survey-signing-key-not-for-production"
TEST_CUSTOMER_ID_KEY = "test-suite-customer-id-key-not-for-production"


def service_env(infra: Infra, *, prefix: str, database: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "MONGODB_", "HTTP_"))}
    env.update(
        API_TOKENS=TEST_TOKENS,
        SURVEY_SIGNING_KEY=TEST_SURVEY_SIGNING_KEY,
        CUSTOMER_ID_KEY=TEST_CUSTOMER_ID_KEY,
        RATE_LIMIT="",  # the suite drives services harder than any client; tests/security turns it on
    )
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka,
        MONGODB_URI=infra.mongodb_uri,
        MONGODB_DATABASE=database,
        KAFKA_TOPIC_PREFIX=prefix,
        KAFKA_PARTITIONS=env.get("TEST_KAFKA_PARTITIONS", "4"),
        HTTP_PORT=str(port),
        ENVIRONMENT="test",
        LOG_LEVEL="INFO",
        OUTBOX_POLL_INTERVAL_S="0.2",
        TIMER_POLL_INTERVAL_S="0.3",
        CONSUMER_BACKOFF_S="0.05",
        OUTBOX_HEARTBEAT_S="2",
    )
    env.update(extra)
    return env


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def mongo(infra: Infra) -> AsyncMongoClient[dict[str, Any]]:
    return AsyncMongoClient(infra.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)


# The services that carry the tickets: what load, chaos and cost tests start.
PIPELINE_SERVICE_NAMES = ("intake", "routing", "followup", "feedback", "metrics")
# Every service the platform deploys (Helm, compose, Prometheus jobs, schemathesis). notify only sends
# messages and fieldwork records on-site work: a test that needs one starts it
# (`platform.start_ready("notify", ...)`).
SERVICE_NAMES = (*PIPELINE_SERVICE_NAMES, "notify", "fieldwork")


@dataclass
class Platform:
    """Services of one test, sharing a topic prefix and each with its own database."""

    infra: Infra
    processes: list[ServiceProcess]
    prefix: str = field(default_factory=lambda: unique("t"))
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def database(self, service: str) -> str:
        return f"{self.prefix.rstrip('.')}_{service}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def start(self, service: str, *, replica: int = 0, **extra: str) -> ServiceProcess:
        """Start `python -m aftersales.<service>` as a real process on a free port."""
        port = free_port()
        env = service_env(self.infra, prefix=self.prefix, database=self.database(service), port=port, **extra)
        proc = ServiceProcess(
            f"{service}{replica or ''}", python_module(f"aftersales.{service}"), env, port
        ).start()
        self.processes.append(proc)
        self.services[service if not replica else f"{service}{replica}"] = proc
        return proc

    async def start_ready(self, *services: str, **extra: str) -> dict[str, ServiceProcess]:
        procs = {s: self.start(s, **extra) for s in services}
        await asyncio.gather(*(p.wait_ready() for p in procs.values()))
        return procs

    def url(self, service: str) -> str:
        return self.services[service].url


def auth(token: str = "dev-admin-token") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
