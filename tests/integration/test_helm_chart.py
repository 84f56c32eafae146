"""The Helm chart as a platform team installs it: rendered by a real helm with default, development and
production-like values, every manifest valid for Kubernetes 1.29-1.37 (offline schemas of both ends, from
kubernetes-validate; the Prometheus Operator's own Go types for its resources, through deploy/local/crdcheck),
and each service's own Settings class
accepting the environment its pod gets. A value a service would refuse fails the render, not the pod."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploytools import CHART, RULES_DIR, built_tool, helm_binary, helm_run, render, run_promtool
from harness import SERVICE_NAMES
from pydantic import ValidationError

pytestmark = pytest.mark.long_running(minutes=1)

# The two ends of the supported range: an API or field is added in one release and removed in a later
# one, never brought back, so what both ends accept every release between them accepts too (validating
# all nine releases cost a minute of the suite).
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
TOKENS = json.dumps(
    {
        "crm-7f3a9c2e51-0d4b8a61c2f94e3b-a7": {"subject": "crm", "scopes": ["supervisor"]},
        "prometheus-5b1e0c7d9a2f4e68b3c1-d2": {"subject": "prometheus", "scopes": ["metrics"]},
    }
)
LINK_BASE = "https://survey.example.com/v1/surveys/"
DIGEST = "sha256:" + "ab" * 32
PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "apiTokens": {"json": TOKENS},
    "survey": {"linkBaseUrl": LINK_BASE, "signingKey": "chart-managed-survey-key-" + "x" * 16},
    "networkPolicy": {"enabled": True},
    "customerIdKey": {"value": "chart-managed-customer-id-key-" + "c" * 8},
    "serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "platform-prometheus-token"}},
    "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://runbooks.example.com/aftersales"},
    "autoscaling": {"enabled": True},
    "services": {"intake": {"imageDigest": DIGEST}},
}
# Secrets the platform team provides (the chart only names them); their contents as the pods would see them.
PLATFORM_SECRETS = {
    ("platform-mongodb", "MONGODB_URI"): "mongodb://mongo-0.mongo:27017/?replicaSet=rs0",
    ("platform-api-tokens", "API_TOKENS"): TOKENS,
    ("platform-survey", "SURVEY_SIGNING_KEY"): "platform-survey-key-" + "y" * 20,
    ("platform-customer-id", "CUSTOMER_ID_KEY"): "platform-customer-id-key-" + "z" * 20,
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "development": {
        "environment": "development",
        "kafka": {"topicPrefix": "dev-", "replicationFactor": 1},
        "podDisruptionBudget": {"enabled": False},
        "topologySpread": {"enabled": False},
    },
    "production": PRODUCTION,
    "production-existing-secrets": {
        "environment": "staging",
        "mongodb": {"existingSecret": "platform-mongodb"},
        "apiTokens": {"existingSecret": "platform-api-tokens"},
        "survey": {"linkBaseUrl": LINK_BASE, "existingSecret": "platform-survey"},
        "customerIdKey": {"existingSecret": "platform-customer-id"},
        "image": {"tag": "1.2.3"},
    },
}


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def crdcheck() -> str:
    return built_tool("crdcheck.sh")


def check_custom_resources(crdcheck: str, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Decode ServiceMonitors and PrometheusRules strictly into the operator's Go types."""
    stream = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    return subprocess.run([crdcheck], input=stream, capture_output=True, text=True, timeout=60)


def validate_manifests(docs: list[dict[str, Any]], tmp_path: Path, crdcheck: str) -> None:
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {version}: {exc}"
                )
    custom = [d for d in docs if d["apiVersion"] == "monitoring.coreos.com/v1"]
    checked = check_custom_resources(crdcheck, custom)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(custom)} checked, 0 invalid" in checked.stdout
    for doc in by_kind(docs, "PrometheusRule").values():
        rules = tmp_path / "prometheusrule.yml"
        rules.write_text(yaml.safe_dump(doc["spec"]))
        checked = run_promtool("check", "rules", str(rules))
        assert checked.returncode == 0, checked.stdout + checked.stderr


def pod_environment(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """The environment the container of `deployment` starts with: envFrom ConfigMaps, then env."""
    configmaps = by_kind(docs, "ConfigMap")
    secrets = {
        (name, key): value
        for name, s in by_kind(docs, "Secret").items()
        for key, value in s.get("stringData", {}).items()
    }
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            key = (ref["name"], ref["key"])
            assert key in secrets or key in PLATFORM_SECRETS, f"{var['name']} refers to unknown Secret {key}"
            env[var["name"]] = secrets.get(key, PLATFORM_SECRETS.get(key, ""))
    return env


def prestop_sleep_s(pod: dict[str, Any]) -> int:
    """Seconds the pod's preStop hook sleeps before Kubernetes sends SIGTERM (0 without a hook)."""
    [container] = pod["containers"]
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


def service_settings(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Build `service`'s Settings from exactly `env`, as in its pod (nothing inherited from this process)."""
    settings_class = importlib.import_module(f"aftersales.{service}.app").Settings
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return settings_class()


# Every manifest against 9 Kubernetes versions' schemas: CPU-bound, and in `make test` it shares 2 cores
# with the servers and two other workers; one scenario took over the suite's 300 s hang guard there on
# 2026-12-01 (alone, all 36 tests of this file take about 40 s).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_chart_renders_valid_kubernetes_manifests(
    helm: str, crdcheck: str, tmp_path: Path, scenario: str
) -> None:
    values = SCENARIOS[scenario]
    lint = helm_run(helm, "lint", tmp_path, values, "--strict")
    assert lint.returncode == 0 and "[ERROR]" not in lint.stdout, lint.stdout + lint.stderr
    docs = render(helm, tmp_path, values)
    assert set(by_kind(docs, "Deployment")) == {f"rel-{s}" for s in SERVICE_NAMES}
    assert set(by_kind(docs, "Service")) == {f"rel-{s}" for s in SERVICE_NAMES}
    validate_manifests(docs, tmp_path, crdcheck)
    if scenario == "production":
        assert {"NetworkPolicy", "ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler"} <= {
            d["kind"] for d in docs
        }


def test_manifest_validation_catches_a_misspelt_field(crdcheck: str) -> None:
    """The offline validators are not lenient: the test above could fail."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}
    deployment["spec"] = {"replica": 2, "selector": {}, "template": {"spec": {"containers": []}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "relabelling": []}]},
    }
    checked = check_custom_resources(crdcheck, [monitor])
    assert checked.returncode == 1 and 'unknown field "relabelling"' in checked.stdout, checked.stdout


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_service_accepts_the_environment_its_pod_gets(
    helm: str, tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, tmp_path, SCENARIOS[scenario])
    for service in SERVICE_NAMES:
        pod = by_kind(docs, "Deployment")[f"rel-{service}"]["spec"]["template"]["spec"]
        env = pod_environment(docs, by_kind(docs, "Deployment")[f"rel-{service}"])
        try:
            settings = service_settings(service, env, monkeypatch)
        except ValidationError as exc:
            pytest.fail(f"{service} would exit at start-up in scenario {scenario}: {exc}")
        settings_class = type(settings)
        assert settings.service_name == service
        assert settings.environment == SCENARIOS[scenario].get("environment", "development")
        assert settings.http_host == "0.0.0.0"
        # the port the pod exposes is the one the service listens on, and its usual default
        assert settings.http_port == pod["containers"][0]["ports"][0]["containerPort"]
        assert settings.http_port == settings_class.model_fields["http_port"].default
        # the preStop sleep, then the service's whole shutdown, with time to spare before SIGKILL
        assert prestop_sleep_s(pod) + settings.shutdown_grace_s < pod["terminationGracePeriodSeconds"]
        if service == "feedback" and scenario.startswith("production"):
            assert settings.survey_link_base_url == LINK_BASE
        elif service == "feedback":
            assert settings.survey_link_base_url == "http://rel-feedback:8004/v1/surveys/"


@pytest.mark.parametrize(
    ("values", "sleep_s", "grace_s"),
    [
        ({}, 5, 22),  # the defaults: 30 s = 5 s preStop + 22 s shutdown + 3 s margin
        (
            {
                "terminationGracePeriodSeconds": 60,
                "shutdown": {"preStopSleepSeconds": 10, "marginSeconds": 5},
            },
            10,
            45,
        ),
        ({"shutdown": {"preStopSleepSeconds": 0, "marginSeconds": 3}}, 0, 27),
    ],
)
def test_pods_sleep_in_a_prestop_hook_and_shut_down_within_the_rest_of_their_grace_period(
    helm: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    values: dict[str, Any],
    sleep_s: int,
    grace_s: int,
) -> None:
    """Kubernetes counts the preStop hook in terminationGracePeriodSeconds and SIGKILLs at its end: the
    sleep (endpoints are removed while it runs), then SIGTERM and the service's SHUTDOWN_GRACE_S budget
    (HTTP, consumers, outbox flush, producer close), then the margin."""
    docs = render(helm, tmp_path, values)
    for service in SERVICE_NAMES:
        deployment = by_kind(docs, "Deployment")[f"rel-{service}"]
        pod = deployment["spec"]["template"]["spec"]
        assert prestop_sleep_s(pod) == sleep_s
        if not sleep_s:
            assert "lifecycle" not in pod["containers"][0]
        settings = service_settings(service, pod_environment(docs, deployment), monkeypatch)
        assert settings.shutdown_grace_s == grace_s
        margin = values.get("shutdown", {}).get("marginSeconds", 3)
        assert sleep_s + settings.shutdown_grace_s + margin == pod["terminationGracePeriodSeconds"]


SHUTDOWN_OVER_GRACE = {
    "grace period too short for the preStop sleep": (
        {"terminationGracePeriodSeconds": 12},
        "terminationGracePeriodSeconds (12) leaves SHUTDOWN_GRACE_S = 4 s",
    ),
    "SHUTDOWN_GRACE_S for every service": (
        {"extraEnv": [{"name": "SHUTDOWN_GRACE_S", "value": "25"}]},
        "extraEnv sets SHUTDOWN_GRACE_S=25 for feedback: shutdown.preStopSleepSeconds (5) + SHUTDOWN_GRACE_S "
        "(25) + shutdown.marginSeconds (3) = 33 s exceeds terminationGracePeriodSeconds (30)",
    ),
    "SHUTDOWN_GRACE_S for one service": (
        {"services": {"routing": {"env": [{"name": "SHUTDOWN_GRACE_S", "value": "22.5"}]}}},
        "services.routing.env sets SHUTDOWN_GRACE_S=22.5 for routing",
    ),
    "a longer preStop sleep under a service's own SHUTDOWN_GRACE_S": (
        {
            "shutdown": {"preStopSleepSeconds": 8, "marginSeconds": 3},
            "extraEnv": [{"name": "SHUTDOWN_GRACE_S", "value": "10"}],
            "services": {"intake": {"env": [{"name": "SHUTDOWN_GRACE_S", "value": "20"}]}},
        },
        "services.intake.env sets SHUTDOWN_GRACE_S=20 for intake",
    ),
}


@pytest.mark.parametrize("case", list(SHUTDOWN_OVER_GRACE))
def test_a_shutdown_that_does_not_fit_the_grace_period_fails_the_render(
    helm: str, tmp_path: Path, case: str
) -> None:
    values, message = SHUTDOWN_OVER_GRACE[case]
    rendered = helm_run(helm, "template", tmp_path, values)
    assert rendered.returncode != 0 and message in rendered.stderr, rendered.stderr
    # the same values with a budget that fits render
    fitting = copy.deepcopy(values)
    fitting["terminationGracePeriodSeconds"] = 40
    docs = render(helm, tmp_path, fitting)
    assert len(by_kind(docs, "Deployment")) == len(SERVICE_NAMES)


MISSING_OUTSIDE_DEVELOPMENT = {
    "apiTokens": ("apiTokens.json", "apiTokens.json or apiTokens.existingSecret is required"),
    "survey.linkBaseUrl": ("survey.linkBaseUrl", "survey.linkBaseUrl is required outside development"),
    "survey.signingKey": ("survey.signingKey", "survey.signingKey or survey.existingSecret"),
    "customerIdKey.value": ("customerIdKey", "customerIdKey.value or customerIdKey.existingSecret"),
}


@pytest.mark.parametrize("missing", list(MISSING_OUTSIDE_DEVELOPMENT))
def test_a_value_the_services_need_outside_development_fails_the_install_not_the_pod(
    helm: str, tmp_path: Path, missing: str
) -> None:
    values = copy.deepcopy(PRODUCTION)
    section, _, key = missing.partition(".")
    if key:
        del values[section][key]
    else:
        del values[section]
    schema_field, message = MISSING_OUTSIDE_DEVELOPMENT[missing]
    lint = helm_run(helm, "lint", tmp_path, values)
    assert lint.returncode != 0 and schema_field in lint.stdout, lint.stdout
    rendered = helm_run(helm, "template", tmp_path, values)
    assert rendered.returncode != 0 and schema_field in rendered.stderr, rendered.stderr
    unchecked = helm_run(helm, "template", tmp_path, values, "--skip-schema-validation")
    assert unchecked.returncode != 0 and message in unchecked.stderr, unchecked.stderr


def test_without_the_chart_check_feedback_would_crash_loop(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the render must fail: the feedback pod refuses to start without its signing key in production."""
    docs = render(helm, tmp_path, PRODUCTION)
    env = pod_environment(docs, by_kind(docs, "Deployment")["rel-feedback"])
    del env["SURVEY_SIGNING_KEY"]
    with pytest.raises(ValidationError, match="survey signing key"):
        service_settings("feedback", env, monkeypatch)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"environment": "prod"}, "environment"),
        ({"enviroment": "production"}, "enviroment"),
        ({"survey": {"signingkey": "k" * 40}}, "signingkey"),
        ({"services": {"metrics": {"replicas": 2}}}, "services.metrics.replicas"),
        ({"services": {"routing": {"replicas": "3"}}}, "services.routing.replicas"),
        ({"services": {"routing": {"replicas": 2.5}}}, "services.routing.replicas"),
        ({"terminationGracePeriodSeconds": 5}, "terminationGracePeriodSeconds"),
        ({"services": {"metrics": {"autoscaling": {"enabled": True}}}}, "services.metrics.autoscaling"),
        ({"probes": {"readinessTimeoutSeconds": 1}}, "probes.readinessTimeoutSeconds"),
        ({"shutdown": {"preStopSleepSeconds": -1}}, "shutdown.preStopSleepSeconds"),
        ({"shutdown": {"preStopSleepSeconds": 5, "marginSeconds": 0}}, "shutdown.marginSeconds"),
        ({"survey": {"linkBaseUrl": "survey.example.com"}}, "survey.linkBaseUrl"),
    ],
)
def test_values_schema_refuses_bad_values(
    helm: str, tmp_path: Path, override: dict[str, Any], field: str
) -> None:
    rendered = helm_run(helm, "template", tmp_path, override)
    assert rendered.returncode != 0 and field in rendered.stderr, rendered.stderr


def test_pods_are_restricted_available_and_restart_on_secret_change(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, PRODUCTION)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler").values()
    }
    assert autoscaled == {f"rel-{s}" for s in SERVICE_NAMES if s != "metrics"}
    budgets = by_kind(docs, "PodDisruptionBudget")
    for service in SERVICE_NAMES:
        deployment = by_kind(docs, "Deployment")[f"rel-{service}"]
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        # restricted Pod Security Standard
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert all("hostPath" not in v for v in pod["volumes"]) and not pod.get("hostNetwork")
        assert pod["automountServiceAccountToken"] is False
        # /readyz pings MongoDB and Kafka with 2 s timeouts each (shared/runtime.py): up to 4 s
        assert container["readinessProbe"]["timeoutSeconds"] > 4
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        for constraint in pod["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == service
        image = container["image"]
        assert image.startswith(f"ghcr.io/example/aftersales-{service}:{app_version}")
        assert image.endswith(f"@{DIGEST}") == (service == "intake")
        if service == "metrics":
            assert deployment["spec"]["replicas"] == 1 and f"rel-{service}" not in budgets
        else:
            assert "replicas" not in deployment["spec"]  # the HPA owns it
            assert budgets[f"rel-{service}"]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    def checksums(values: dict[str, Any]) -> set[str]:
        rendered = render(helm, tmp_path, values)
        return {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
            for d in by_kind(rendered, "Deployment").values()
        }

    rotated = copy.deepcopy(PRODUCTION)
    rotated["survey"]["signingKey"] = "rotated-survey-signing-key-" + "z" * 16
    before, after = checksums(PRODUCTION), checksums(rotated)
    assert len(before) == 1 and before != after


def test_network_policy_lets_in_only_ingress_and_prometheus_and_out_only_dns_kafka_mongodb(
    helm: str, tmp_path: Path
) -> None:
    [policy] = by_kind(render(helm, tmp_path, PRODUCTION), "NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = spec["ingress"]
    peers = ingress["from"]
    assert peers[0] == {"podSelector": {}}  # this namespace
    namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers[1:]}
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert ingress["ports"] == [{"protocol": "TCP", "port": "http"}]
    ports = [sorted(p["port"] for p in rule["ports"]) for rule in spec["egress"]]
    assert ports == [[53, 53], [9092], [27017]]


def test_chart_ships_the_alert_rules_of_deploy_prometheus_with_its_runbook_base(
    helm: str, tmp_path: Path
) -> None:
    canonical = (RULES_DIR / "aftersales.yml").read_text()
    assert (CHART / "files" / "prometheus-rules.yml").read_text() == canonical, (
        "copy deploy/prometheus/rules/aftersales.yml to helm/aftersales/files/prometheus-rules.yml"
    )
    docs = render(helm, tmp_path, PRODUCTION)
    [rule] = by_kind(docs, "PrometheusRule").values()
    base = PRODUCTION["prometheusRule"]["runbookBaseUrl"]
    expected = yaml.safe_load(
        canonical.replace("https://github.com/aftersales/platform/blob/main/docs/operations.md", base)
    )
    assert rule["spec"] == expected
    urls = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert urls and all(u.startswith(f"{base}#") for u in urls)
    # job="aftersales-<service>" whatever the release is called, as the rules expect
    [monitor] = by_kind(docs, "ServiceMonitor").values()
    [endpoint] = monitor["spec"]["endpoints"]
    assert {
        "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"],
        "targetLabel": "job",
        "replacement": "aftersales-$1",
    } in endpoint["relabelings"]
    services = by_kind(docs, "Service")
    assert {s["metadata"]["labels"]["app.kubernetes.io/name"] for s in services.values()} == set(
        SERVICE_NAMES
    )
