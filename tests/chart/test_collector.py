"""The collector in the chart: off by default; when on, every object validates, its pod is `restricted`, its
arguments parse with the collector's own parser, the operator is pointed at its Service with its token, its
NetworkPolicy admits only the documented peers, and checkov finds nothing .checkov.yaml does not justify."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import esteira.collector.__main__ as collector_main
from esteira.collector.app import CollectorConfig
from esteira.vocabulary import ENV_COLLECTOR_TOKEN_FILE, ENV_COLLECTOR_URL, parse_duration
from tests.chart.helm import CHART, NAMESPACE, RELEASE, HelmError, Rendered, merge, render, run_helm
from tests.chart.test_chart import restricted_violations
from tests.chart.test_scan import failures, run_checkov, skipped_checks
from tests.support.schemas import validate_manifests

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
ON = {"collector": {"enabled": True}}
POSTGRESQL = merge(
    ON,
    {
        "collector": {
            "database": {"type": "postgresql", "postgresql": {"dsnSecret": "collector-db", "dsnKey": "url"}},
            "token": {"existingSecret": "collector-token", "key": "secret"},
            "retention": "720h",
            "qualityWindow": "30m",
            "maxBodyBytes": 1048576,
            "port": 9000,
        }
    },
)
NAMESPACED = {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a", "team-b"]}
LABELLERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "labelling"}}}]

# The collector's values sets: each database, generated and existing token, both RBAC modes, with and
# without its NetworkPolicy and the Prometheus Operator objects.
COLLECTOR_MATRIX: dict[str, dict[str, Any]] = {
    "sqlite": ON,
    "sqlite-existing-claim": merge(
        ON,
        NAMESPACED,
        {"collector": {"database": {"sqlite": {"existingClaim": "records"}}, "networkPolicy": {"enabled": False}}},
    ),
    "postgresql": merge(POSTGRESQL, {"collector": {"networkPolicy": {"labelsFrom": LABELLERS}}}),
    "postgresql-monitoring": merge(
        POSTGRESQL, NAMESPACED, {"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    ),
    "operator-egress-open": merge(ON, {"networkPolicy": {"egress": {"enabled": False}}}),
}


def values_of(case: str) -> dict[str, Any]:
    return merge(DEFAULTS, COLLECTOR_MATRIX[case])


OPERATOR = RELEASE  # the release name already contains the chart's, so it is the full name


def collector_name() -> str:
    return f"{OPERATOR}-collector"


def collector_objects(rendered: Rendered) -> list[dict[str, Any]]:
    return [o for o in rendered if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "collector"]


def collector_pod(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.one("Deployment", collector_name())["spec"]["template"]["spec"]
    return spec


def operator_env(rendered: Rendered) -> dict[str, dict[str, Any]]:
    (container,) = rendered.one("Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container.get("env", [])}


def test_off_by_default() -> None:
    rendered = render()
    assert collector_objects(rendered) == []
    assert operator_env(rendered) == {}
    assert [p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")] == [OPERATOR]


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_lint_strict(case: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=COLLECTOR_MATRIX[case])
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_every_object_validates(case: str) -> None:
    rendered = render(COLLECTOR_MATRIX[case])
    validate_manifests(rendered)
    for obj in collector_objects(rendered):
        assert obj["metadata"]["namespace"] == NAMESPACE, f"{obj['kind']} {obj['metadata']['name']}"


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_collector_pod_is_restricted(case: str) -> None:
    pod = collector_pod(render(COLLECTOR_MATRIX[case]))
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False, "the collector never calls the API"
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"] == values_of(case)["collector"]["resources"]


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_arguments_parse_into_the_values(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container's command line, run through the collector's own parser, gives the configured service."""
    values = values_of(case)["collector"]
    rendered = render(COLLECTOR_MATRIX[case])
    pod = collector_pod(rendered)
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "esteira.collector"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    files = {"--token-file": "s3cret\n", "--database-file": "postgresql://from-the-secret/db\n"}
    args = []
    for arg in container["args"]:
        flag, _, path = arg.partition("=")
        if flag in files:  # a mounted Secret: the file lies under a mount, here a copy with known content
            assert any(path.startswith(mounted + "/") for mounted in mounts.values()), arg
            (tmp_path / flag).write_text(files[flag])
            arg = f"{flag}={tmp_path / flag}"
        args.append(arg)
    seen: dict[str, Any] = {}

    class Recorded:
        def __init__(self, config: CollectorConfig) -> None:
            seen["config"] = config

        def app(self) -> None:
            return None

    monkeypatch.setattr(collector_main, "Collector", Recorded)
    monkeypatch.setattr("aiohttp.web.run_app", lambda app, **kw: seen.update(kw))
    collector_main.main(args)
    config: CollectorConfig = seen["config"]
    assert config.token == "s3cret"
    assert seen["port"] == values["port"] == container["ports"][0]["containerPort"]
    assert parse_duration(config.retention) == parse_duration(values["retention"])
    assert parse_duration(config.quality_window) == parse_duration(values["qualityWindow"])
    assert config.max_body == values["maxBodyBytes"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["token"]["secret"]["items"] == [{"key": values["token"]["key"], "path": "token"}]
    if values["database"]["type"] == "sqlite":
        assert config.database == f"sqlite:///{mounts['data']}/collector.db"
        claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
        existing = values["database"]["sqlite"]["existingClaim"]
        assert claim == (existing or f"{collector_name()}-data")
        assert bool(rendered.of_kind("PersistentVolumeClaim")) == (not existing)
        assert rendered.one("Deployment", collector_name())["spec"]["strategy"] == {"type": "Recreate"}
    else:
        assert config.database == "postgresql://from-the-secret/db", "the DSN comes from the mounted Secret"
        secret = values["database"]["postgresql"]
        database = volumes["database"]["secret"]
        assert database["secretName"] == secret["dsnSecret"]
        assert database["items"] == [{"key": secret["dsnKey"], "path": "dsn"}]
        assert "env" not in container, "no secret in the environment"
        assert "data" not in volumes and not rendered.of_kind("PersistentVolumeClaim")


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_operator_and_model_servers_are_pointed_at_the_collector(case: str) -> None:
    """The operator's URL (the model servers' default sink, as the renderer builds it) names the collector's
    Service by its cluster DNS name and port, and its token is the one the collector reads."""
    values = values_of(case)["collector"]
    rendered = render(COLLECTOR_MATRIX[case])
    env = operator_env(rendered)
    assert set(env) == {ENV_COLLECTOR_URL, ENV_COLLECTOR_TOKEN_FILE}
    url = urlsplit(env[ENV_COLLECTOR_URL]["value"])
    service = rendered.one("Service", collector_name())
    assert url.hostname == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    (port,) = service["spec"]["ports"]
    assert url.port == port["port"] == values["port"]
    assert service["spec"]["selector"] == collector_pod_labels(rendered, service)
    mounted = {v["name"]: v for v in collector_pod(rendered)["volumes"]}["token"]["secret"]
    operator_pod = rendered.one("Deployment", OPERATOR)["spec"]["template"]["spec"]
    (container,) = operator_pod["containers"]
    token_file = Path(env[ENV_COLLECTOR_TOKEN_FILE]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent)]
    volume = next(v for v in operator_pod["volumes"] if v["name"] == mount["name"])["secret"]
    assert volume["secretName"] == mounted["secretName"]
    assert volume["items"] == [{"key": values["token"]["key"], "path": token_file.name}]
    generated = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == mounted["secretName"]]
    if values["token"]["existingSecret"]:
        assert mounted["secretName"] == values["token"]["existingSecret"] and not generated
    else:
        (secret,) = generated
        assert len(secret["data"][values["token"]["key"]]) >= 64, "48 random characters, base64"


def collector_pod_labels(rendered: Rendered, service: dict[str, Any]) -> dict[str, str]:
    """The collector pod's labels that the Service selects on (and no operator pod has)."""
    labels = rendered.one("Deployment", collector_name())["spec"]["template"]["metadata"]["labels"]
    operator = rendered.one("Deployment", OPERATOR)["spec"]["template"]["metadata"]["labels"]
    selected = {k: labels[k] for k in service["spec"]["selector"]}
    assert not selected.items() <= operator.items(), "the collector's Service must not select the operator"
    return selected


def ingress_peers(rendered: Rendered) -> list[dict[str, Any]]:
    (rule,) = rendered.one("NetworkPolicy", collector_name())["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers: list[dict[str, Any]] = rule["from"]
    return peers


def test_network_policy_admits_model_servers_operator_monitoring_and_labellers() -> None:
    rendered = render(COLLECTOR_MATRIX["postgresql"])
    policy = rendered.one("NetworkPolicy", collector_name())["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "collector"
    model_servers, operator, monitoring, labellers = ingress_peers(rendered)
    assert model_servers["namespaceSelector"] == {}, "cluster mode: model servers in every namespace"
    assert model_servers["podSelector"]["matchExpressions"] == [
        {"key": "serving.esteira.io/revision", "operator": "Exists"}
    ]
    operator_pod = rendered.one("Deployment", OPERATOR)["spec"]["template"]["metadata"]["labels"]
    assert operator["podSelector"]["matchLabels"].items() <= operator_pod.items()
    assert monitoring == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert labellers == LABELLERS[0]


def test_network_policy_in_namespaced_mode_names_the_watched_namespaces() -> None:
    peers = ingress_peers(render(COLLECTOR_MATRIX["postgresql-monitoring"]))
    named = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in peers
        if {"podSelector", "namespaceSelector"} <= set(p)
    ]
    assert named[:2] == ["team-a", "team-b"]
    assert len(peers) == 4, "two namespaces of model servers, the operator, monitoring"


@pytest.mark.parametrize("case", COLLECTOR_MATRIX)
def test_operator_may_reach_the_collector_when_its_egress_is_restricted(case: str) -> None:
    values = values_of(case)
    rendered = render(COLLECTOR_MATRIX[case])
    extra = [p for p in rendered.of_kind("NetworkPolicy") if p["metadata"]["name"] == f"{OPERATOR}-to-collector"]
    if not values["networkPolicy"]["egress"]["enabled"]:
        assert extra == [], "an Egress policy alone would close the operator's open egress"
        return
    (policy,) = extra
    (rule,) = policy["spec"]["egress"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert rule["ports"] == [{"port": values["collector"]["port"], "protocol": "TCP"}]
    assert rule["to"] == [
        {"podSelector": {"matchLabels": rendered.one("Service", collector_name())["spec"]["selector"]}}
    ]


def test_service_monitor_scrapes_the_collector_when_asked() -> None:
    monitors = render(COLLECTOR_MATRIX["postgresql-monitoring"]).of_kind("ServiceMonitor")
    (collector,) = [m for m in monitors if m["metadata"]["name"] == collector_name()]
    assert collector["spec"]["endpoints"][0]["port"] == "http"
    assert collector["spec"]["endpoints"][0]["path"] == "/metrics"
    assert not [m for m in render(ON).of_kind("ServiceMonitor")]


SCHEMA_ERRORS = {
    "postgresql without a DSN Secret": (
        {"collector": {"enabled": True, "database": {"type": "postgresql"}}},
        "at '/collector/database/postgresql/dsnSecret'",
    ),
    "unknown database": ({"collector": {"database": {"type": "mysql"}}}, "at '/collector/database/type'"),
    "retention without unit": ({"collector": {"retention": "7"}}, "at '/collector/retention'"),
    "unknown key": ({"collector": {"replicas": 2}}, "replicas"),
}


@pytest.mark.parametrize(("values", "error"), SCHEMA_ERRORS.values(), ids=SCHEMA_ERRORS.keys())
def test_schema_rejects_bad_collector_values(values: dict[str, Any], error: str) -> None:
    with pytest.raises(HelmError) as failed:
        render(values)
    assert "schema" in failed.value.stderr
    assert error in failed.value.stderr


@pytest.fixture(scope="module")
def collector_scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collector-scan")
    for case, values in COLLECTOR_MATRIX.items():
        (folder / f"chart-{case}.yaml").write_text(yaml.safe_dump_all(list(render(values)), sort_keys=False))
    (folder / "Dockerfile").write_text((CHART.parents[1] / "Dockerfile").read_text())
    return folder


@pytest.mark.slow
@pytest.mark.xdist_group("checkov")
def test_checkov_finds_only_justified_failures(collector_scan_dir: Path) -> None:
    """All checks on: every failure on the collector's renders is one .checkov.yaml skips with a reason."""
    failed = failures(run_checkov(collector_scan_dir, "--skip-check", "CKV_NONE"))
    unjustified = {check: where for check, where in failed.items() if check not in skipped_checks()}
    assert not unjustified, unjustified
    assert any(collector_name() in where for found in failed.values() for where in found), "the scan saw it"
