"""Alertmanager wired to the alert rules: a real Prometheus evaluating the project's rules sends its firing
alerts to a real Alertmanager running the project's configuration (both from Debian's packages, through
deploy/local/prometheus.sh and deploy/local/alertmanager.sh), which routes them by severity."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from deploytools import RULES_DIR
from harness import ROOT, SERVICE_NAMES, free_port, wait_until

LOCAL = ROOT / "deploy" / "local"


def test_prometheus_configs_point_at_the_alertmanagers_they_run_with() -> None:
    local = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [am] = local["alerting"]["alertmanagers"]
    default_port = re.search(r"ALERTMANAGER_PORT:-(\d+)", (LOCAL / "alertmanager.sh").read_text())
    assert default_port and am["static_configs"][0]["targets"] == [f"127.0.0.1:{default_port[1]}"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    in_compose = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.compose.yml").read_text())
    [am] = in_compose["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"] and "alertmanager" in compose


def rules_firing_soon(tmp_path: Path) -> Path:
    """The project's rules firing after 5 s instead of minutes. Not at once: an alert that fires before
    Prometheus has discovered its Alertmanager is dropped, and only re-sent a minute later."""
    out = tmp_path / "rules.yml"
    groups = [
        g for path in sorted(RULES_DIR.glob("*.yml")) for g in yaml.safe_load(path.read_text())["groups"]
    ]
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "5s"
    out.write_text(yaml.safe_dump({"groups": groups}))
    return out


def run(script: str, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(LOCAL / script), command], env=env, capture_output=True, text=True, timeout=600
    )


async def test_firing_alerts_reach_alertmanager_routed_by_severity(tmp_path: Path) -> None:
    am_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    # Nothing to scrape: every service is absent, so AftersalesServiceAbsent fires once per service.
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules_firing_soon(tmp_path))],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            }
        )
    )
    env = {
        **os.environ,
        "ALERTMANAGER_PORT": str(am_port),
        "ALERTMANAGER_DATA": str(tmp_path / "am-data"),
        "PROMETHEUS_PORT": str(prom_port),
        "PROMETHEUS_CONFIG": str(config),
        "PROMETHEUS_DATA": str(tmp_path / "prom-data"),
    }
    try:
        started = await asyncio.to_thread(run, "alertmanager.sh", "start", env)
        assert started.returncode == 0, started.stderr
        started = await asyncio.to_thread(run, "prometheus.sh", "start", env)
        assert started.returncode == 0, started.stderr
        async with httpx.AsyncClient(timeout=10) as client:

            async def absent_alerts() -> list[dict[str, Any]] | None:
                alerts = (await client.get(f"http://127.0.0.1:{am_port}/api/v2/alerts")).json()
                absent = [a for a in alerts if a["labels"]["alertname"] == "AftersalesServiceAbsent"]
                return absent if len(absent) == len(SERVICE_NAMES) else None

            absent = await wait_until("Alertmanager holding an absent alert per service", absent_alerts, 60)
        assert {a["labels"]["job"] for a in absent} == {f"aftersales-{s}" for s in SERVICE_NAMES}
        for alert in absent:
            assert alert["labels"]["severity"] == "critical"
            assert [r["name"] for r in alert["receivers"]] == ["aftersales-critical"]
            assert alert["annotations"]["runbook_url"].endswith("docs/operations.md#aftersalesserviceabsent")
            assert alert["annotations"]["runbook_url"].startswith("https://")
    finally:
        await asyncio.to_thread(run, "prometheus.sh", "stop", env)
        await asyncio.to_thread(run, "alertmanager.sh", "stop", env)
