"""Deployment artifacts: docker-compose.yml and the Dockerfiles (the Helm chart: test_helm_chart.py)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import yaml
from harness import ROOT, SERVICE_NAMES

GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"


def default_port(service: str) -> int:
    port = importlib.import_module(f"aftersales.{service}.app").Settings.model_fields["http_port"].default
    assert isinstance(port, int)
    return port


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def mounts(spec: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each volume of a compose service."""
    return {v.split(":")[1]: v.split(":")[0] for v in spec.get("volumes", [])}


def test_compose_runs_every_service_from_its_dockerfile_with_its_port() -> None:
    services = compose()["services"]
    assert {"kafka", "mongodb", "prometheus", "grafana", *SERVICE_NAMES} <= set(services)
    for service in SERVICE_NAMES:
        spec = services[service]
        dockerfile = ROOT / spec["build"]["dockerfile"]
        assert dockerfile.exists()
        port = default_port(service)
        assert spec["ports"] == [f"127.0.0.1:{port}:{port}"]
        text = dockerfile.read_text()
        assert re.search(r"^USER 10001$", text, re.M)
        assert f'CMD ["python", "-m", "aftersales.{service}"]' in text
        assert f"EXPOSE {port}" in text
        assert spec["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.compose.yml").read_text())
    targets = {
        t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {f"{s}:{default_port(s)}" for s in SERVICE_NAMES}
    assert {job["job_name"] for job in prometheus["scrape_configs"]} == {
        f"aftersales-{s}" for s in SERVICE_NAMES
    }


def test_compose_images_are_pinned_and_every_container_restarts() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        assert spec.get("restart") == "unless-stopped", f"{name} has no restart policy"
        if "image" in spec:
            assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", spec["image"]), (
                f"{name}: floating tag {spec['image']}"
            )
    for service in SERVICE_NAMES:
        text = (ROOT / "services" / service / "Dockerfile").read_text()
        for image in re.findall(r"^FROM (\S+)", text, re.M):
            assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), f"{service}: floating base {image}"
        assert re.search(r'"uv==\d+\.\d+\.\d+"', text), f"{service}: uv is not pinned"


def test_compose_keeps_kafka_mongodb_and_prometheus_data_in_volumes() -> None:
    spec = compose()
    services, volumes = spec["services"], set(spec["volumes"])
    kafka = services["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert mounts(kafka)[log_dirs] in volumes, "Kafka must write its log into the volume"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", kafka["environment"]["CLUSTER_ID"])
    assert mounts(services["mongodb"])["/data/db"] in volumes
    prometheus = services["prometheus"]
    [storage] = [a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--storage.tsdb.path=")]
    assert mounts(prometheus)[storage] in volumes
    assert mounts(services["grafana"])["/var/lib/grafana"] in volumes
    # healthy means writable PRIMARY, not merely "replica set status answered"
    healthcheck = " ".join(services["mongodb"]["healthcheck"]["test"])
    assert "isWritablePrimary" in healthcheck and "rs.initiate" in healthcheck


def test_compose_grafana_reads_prometheus_and_the_dashboards() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    [source] = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = re.sub(r"\$\{(\w+)\}", lambda m: str(grafana["environment"][m.group(1)]), source["url"])
    assert url == "http://prometheus:9090" and "prometheus" in services
    assert "127.0.0.1" not in url, "inside the Grafana container, loopback is Grafana itself"
    [provider] = yaml.safe_load((GRAFANA / "dashboards" / "aftersales.yml").read_text())["providers"]
    dashboards = mounts(grafana)[provider["options"]["path"]]
    assert (ROOT / dashboards).resolve() == (ROOT / "deploy" / "grafana" / "dashboards").resolve()
    assert list((ROOT / dashboards).glob("*.json"))
    assert mounts(grafana)["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
