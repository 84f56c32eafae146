"""Alertmanager wired to the alert rules: a real Prometheus evaluating the project's rules sends its firing
alerts to a real Alertmanager running the project's configuration (both from Debian's packages, through
deploy/local/prometheus.sh and deploy/local/alertmanager.sh), which routes them by severity; and its
webhook receivers reach notify, which mails the on-call rotation."""

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
from harness import ROOT, SERVICE_NAMES, Platform, auth, free_port, wait_until
from notify_receivers import body_of, smtp_server

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


def test_compose_alertmanager_reaches_notify_inside_the_compose_network() -> None:
    local = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    in_compose = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.compose.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "--config.file=/etc/alertmanager/alertmanager.compose.yml" in compose["alertmanager"]["command"]
    urls = {r["name"]: [w["url"] for w in r["webhook_configs"]] for r in in_compose["receivers"]}
    assert set(urls) == {"aftersales-critical", "aftersales-warning"}
    assert all(u == ["http://notify:8006/v1/alerts/alertmanager"] for u in urls.values())
    assert "notify" in compose and "8006" in str(compose["notify"].get("environment", "")) + str(
        compose["notify"].get("ports", "")
    )
    for receiver in in_compose["receivers"]:  # nothing else differs from the local configuration
        for hook in receiver["webhook_configs"]:
            hook["url"] = "http://127.0.0.1:8006/v1/alerts/alertmanager"
    assert in_compose == local
    amtool = run("alertmanager.sh", "amtool", dict(os.environ)).stdout.strip()  # installed when missing
    checked = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


def config_for_notify(tmp_path: Path, notify_port: int) -> Path:
    """The project's Alertmanager configuration with its webhooks at the test's notify and no group wait."""
    config = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        [hook] = receiver["webhook_configs"]  # one YAML anchor: the same dict in both receivers
        assert hook["url"] == "http://127.0.0.1:8006/v1/alerts/alertmanager" and hook["send_resolved"]
        receiver["webhook_configs"] = [
            {**hook, "url": f"http://127.0.0.1:{notify_port}/v1/alerts/alertmanager"}
        ]
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
    out = tmp_path / "alertmanager.yml"
    out.write_text(yaml.safe_dump(config))
    return out


async def test_a_firing_alert_reaches_on_call_through_notify(tmp_path: Path, platform: Platform) -> None:
    am_port = free_port()
    with smtp_server(free_port()) as box:
        procs = await platform.start_ready(
            "notify",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(box.port),
            ALERTMANAGER_WEBHOOK_TOKEN="dev-alertmanager-token",  # what the project's configuration sends
        )
        notify = procs["notify"].url
        env = {
            **os.environ,
            "ALERTMANAGER_PORT": str(am_port),
            "ALERTMANAGER_DATA": str(tmp_path / "am-data"),
            "ALERTMANAGER_CONFIG": str(config_for_notify(tmp_path, procs["notify"].port)),
        }
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                body = {"channels": ["email"], "email": "oncall@example.com", "language": "en"}
                r = await client.put(f"{notify}/v1/recipients/oncall/platform", json=body, headers=auth())
                assert r.status_code in (200, 201), r.text
                started = await asyncio.to_thread(run, "alertmanager.sh", "start", env)
                assert started.returncode == 0, started.stderr
                labels = {"alertname": "AftersalesDeadLetterNotEmpty", "severity": "warning", "topic": "t"}
                alert = {"labels": labels, "annotations": {"summary": "messages parked in t.dlq"}}
                r = await client.post(f"http://127.0.0.1:{am_port}/api/v2/alerts", json=[alert])
                assert r.status_code == 200, r.text

                async def mails() -> list[Any] | None:
                    return box.to("oncall@example.com") or None

                [mail] = await wait_until("the on-call mail", mails, 25)
                assert mail["Subject"] == "[FIRING:1] AftersalesDeadLetterNotEmpty (warning)"
                assert "messages parked in t.dlq" in body_of(mail)
        finally:
            await asyncio.to_thread(run, "alertmanager.sh", "stop", env)
