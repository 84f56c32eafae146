"""Tools the deployment tests need, each provisioned by the project's own scripts: helm (built with Go by
deploy/local/helm.sh), crdcheck (Prometheus Operator resources, deploy/local/crdcheck.sh) and promtool
(Debian's prometheus package, deploy/local/prometheus.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from harness import ROOT

CHART = ROOT / "helm" / "aftersales"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"


def built_tool(script: str) -> str:
    """Return the path a deploy/local build script prints, building the tool with Go on first use."""
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / script)], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, f"deploy/local/{script} failed:\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def helm_binary() -> str:
    """Return helm's path, building the pinned version with Go on first use."""
    return built_tool("helm.sh")


def promtool() -> str:
    """Return promtool's path, installing Debian's prometheus package through the project script if needed."""
    script = ROOT / "deploy" / "local" / "prometheus.sh"
    done = subprocess.run(["bash", str(script), "promtool"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"deploy/local/prometheus.sh promtool failed:\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def helm_run(
    helm: str, command: str, tmp_path: Path, values: dict[str, Any], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run `helm template` or `helm lint` on the chart with `values` as a values file."""
    values_file = tmp_path / f"values-{abs(hash(yaml.safe_dump(values)))}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    args = ["template", "rel", str(CHART)] if command == "template" else [command, str(CHART)]
    return subprocess.run(
        [helm, *args, "-f", str(values_file), *extra], capture_output=True, text=True, timeout=120
    )


def render(helm: str, tmp_path: Path, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    """Return the manifests `helm template` renders with `values`; fail the test if it does not render."""
    done = helm_run(helm, "template", tmp_path, values, *extra)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
