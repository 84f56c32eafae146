"""Kafka over SASL_SSL (SCRAM-SHA-512 over TLS): a second local broker, on other loopback ports, with a
SCRAM listener and a certificate from a CA made for the test. A service configured with the settings
works through it end to end; a wrong password or a plaintext client gets nowhere."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from harness import ROOT, Infra, Platform, free_port, wait_until
from security_helpers import WEB, ticket_body

from aftersales.shared.contracts import Topic
from aftersales.shared.kafkaauth import client_options
from aftersales.shared.settings import ServiceSettings

# Not yet run under the after-test checks (tests/conftest.py): opted out of both until it is.
pytestmark = [
    pytest.mark.expect_tracebacks("a second SASL_SSL broker killed under a running service, bad credentials"),
    pytest.mark.expect_dlq("a second SASL_SSL broker killed under a running service, bad credentials"),
]

USER, PASSWORD = "aftersales-intake", "scram-secret-for-the-test-broker"
KAFKA_DIR = ROOT / "deploy" / "local" / "kafka"


@dataclass
class ScramBroker:
    bootstrap: str
    cafile: Path

    def env(self, password: str = PASSWORD) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": password,
            "KAFKA_SSL_CAFILE": str(self.cafile),
            "KAFKA_CONNECT_TIMEOUT_S": "8",
        }

    def settings(self, password: str = PASSWORD) -> ServiceSettings:
        return ServiceSettings(**{k.lower(): v for k, v in self.env(password).items()})  # type: ignore[arg-type]


def kafka_libs() -> Path:
    version = re.search(r"<kafka.version>(.+)</kafka.version>", (KAFKA_DIR / "pom.xml").read_text())
    assert version is not None
    cache = Path(
        os.environ.get("AFTERSALES_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aftersales"
    )
    libs = cache / f"kafka-{version[1]}" / "libs"
    assert libs.is_dir(), f"Kafka is provisioned by deploy/local/infra.sh into {libs}"
    return libs


def make_certificates(tmp: Path) -> tuple[Path, Path]:
    """Return (CA certificate, server key + certificate chain in one PEM) for 127.0.0.1 / localhost."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aftersales-test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    )
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
    bundle = tmp / "server.pem"
    bundle.write_text((tmp / "server.pk8").read_text() + (tmp / "server.crt").read_text())
    return tmp / "ca.pem", bundle


@pytest.fixture(scope="module")
def scram_broker(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScramBroker]:
    tmp = tmp_path_factory.mktemp("scram-kafka")
    cafile, keystore = make_certificates(tmp)
    libs = kafka_libs()
    internal, sasl, controller = free_port(), free_port(), free_port()
    conf = tmp / "server.properties"
    conf.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                f"listeners=INTERNAL://127.0.0.1:{internal},SASL_SSL://127.0.0.1:{sasl},"
                f"CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=INTERNAL://127.0.0.1:{internal},SASL_SSL://127.0.0.1:{sasl}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
                "inter.broker.listener.name=INTERNAL",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                f"log.dirs={tmp / 'logs'}",
                "num.partitions=2",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
            ]
        )
        + "\n"
    )
    java = [
        "java",
        "-Xms128m",
        "-Xmx320m",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.yaml'}",
        "-cp",
        f"{libs}/*",
    ]
    cluster = subprocess.run(
        [*java, "kafka.tools.StorageTool", "random-uuid"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()[-1]
    subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster,
            "-c",
            str(conf),
            "--add-scram",
            f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = (tmp / "kafka.log").open("wb")
    broker = subprocess.Popen([*java, "kafka.Kafka", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while b"Kafka Server started" not in (tmp / "kafka.log").read_bytes():
            assert broker.poll() is None and time.monotonic() < deadline, (tmp / "kafka.log").read_text()[
                -3000:
            ]
            time.sleep(0.5)
        yield ScramBroker(f"127.0.0.1:{sasl}", cafile)
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(timeout=10)


async def test_a_service_works_through_sasl_ssl_scram(platform: Platform, scram_broker: ScramBroker) -> None:
    await platform.start_ready("intake", **scram_broker.env())
    async with httpx.AsyncClient(timeout=10) as client:
        ready = (await client.get(f"{platform.url('intake')}/readyz")).json()
        assert ready["checks"]["kafka"] is True
        receipt = (
            await client.post(f"{platform.url('intake')}/v1/tickets", json=ticket_body(), headers=WEB)
        ).json()
    consumer = AIOKafkaConsumer(
        platform.topic(Topic.TICKETS),
        bootstrap_servers=scram_broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(scram_broker.settings()),
    )
    await consumer.start()
    try:

        async def created() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            return any(r.key == receipt["id"].encode() for records in batch.values() for r in records)

        await wait_until("the created event over SASL_SSL", created, 30)
    finally:
        await consumer.stop()


async def test_a_wrong_password_or_a_plaintext_client_gets_nowhere(
    platform: Platform, scram_broker: ScramBroker
) -> None:
    proc = platform.start("intake", **scram_broker.env(password="not-the-password-at-all"))
    assert proc.proc is not None
    code = await asyncio.to_thread(proc.proc.wait, 60)
    assert code == 3 and "cannot reach Kafka" in proc.tail()  # EXIT_UNREACHABLE, one clear line
    plain = AIOKafkaProducer(bootstrap_servers=scram_broker.bootstrap, request_timeout_ms=3000)
    with pytest.raises((KafkaError, OSError, asyncio.TimeoutError)):
        await asyncio.wait_for(plain.start(), 15)
    await plain.stop()
