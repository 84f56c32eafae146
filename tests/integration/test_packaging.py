"""Deployment artifacts: the Helm chart rendered by a real helm, docker-compose.yml, the Dockerfiles."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import ROOT, SERVICE_NAMES

CHART = ROOT / "helm" / "aftersales"
PROD_VALUES = {
    "environment": "production",
    "apiTokens": {"json": json.dumps({"s3cret": {"subject": "crm", "scopes": ["supervisor"]}})},
}


@pytest.fixture(scope="module")
def helm() -> str:
    return subprocess.run(
        ["bash", str(ROOT / "deploy/local/helm.sh")], check=True, capture_output=True, text=True, timeout=900
    ).stdout.strip()


def render(helm: str, tmp_path: Path, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return subprocess.run(
        [helm, "template", "rel", str(CHART), "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def default_port(service: str) -> int:
    port = importlib.import_module(f"aftersales.{service}.app").Settings.model_fields["http_port"].default
    assert isinstance(port, int)
    return port


def test_chart_lints_and_every_deployment_is_a_good_cloud_native_citizen(helm: str, tmp_path: Path) -> None:
    values_file = tmp_path / "v.yaml"
    values_file.write_text(yaml.safe_dump(PROD_VALUES))
    lint = subprocess.run([helm, "lint", str(CHART), "-f", str(values_file)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = render(helm, tmp_path, PROD_VALUES)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"rel-{s}" for s in SERVICE_NAMES}
    for service in SERVICE_NAMES:
        pod = deployments[f"rel-{service}"]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["limits"]["memory"]
        assert pod["terminationGracePeriodSeconds"] >= 20
        assert container["ports"][0]["containerPort"] == default_port(service)
        env = {e["name"] for e in container["env"]}
        assert {"MONGODB_URI", "API_TOKENS", "HTTP_PORT"} <= env
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["ENVIRONMENT"] == "production" and config["HTTP_HOST"] == "0.0.0.0"


def test_chart_refuses_production_without_tokens(helm: str, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, {"environment": "production"})
    assert rendered.returncode != 0
    assert "apiTokens.json or apiTokens.existingSecret is required" in rendered.stderr


def test_compose_runs_every_service_from_its_dockerfile_with_its_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
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
