"""The chart renders what `helm install` would accept and the API server would admit, for every switch.

Each values set in ``MATRIX`` is linted (`helm lint --strict`), rendered (`helm template --include-crds`) and
every object validated: built-in kinds against Kubernetes 1.37's strict schemas, custom resources against
their CRDs. The operator pod must pass Pod Security `restricted`, and its arguments must parse with the
operator's own argument parser into the values they came from.
"""

from __future__ import annotations

import copy
import filecmp
import re
from typing import Any

import pytest
import yaml

from esteira.api.crd import build_command_crd
from esteira.controller.config import parse_args
from tests.chart.helm import (
    CHART,
    CUSTOM,
    MATRIX,
    NAMESPACE,
    REPO_ROOT,
    HelmError,
    merge,
    notes,
    render,
    run_helm,
)
from tests.support.schemas import validate_custom_resource, validate_manifests

CRD_FILE = "serving.esteira.io_modeldeployments.yaml"
CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
CLUSTER_SCOPED_KINDS = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterServingRuntime",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
COMMAND_CRD_FILE = "serving.esteira.io_rolloutcommands.yaml"


def values_of(case: str) -> dict[str, Any]:
    """The effective values of a matrix case: the chart's defaults under the case's overrides."""
    return merge(DEFAULTS, MATRIX[case])


def test_crd_is_the_generated_one() -> None:
    """The chart ships the CRDs `esteira crd` and `python -m esteira.api.crd RolloutCommand` generate; a stale
    copy would install an old schema."""
    for name in (CRD_FILE, COMMAND_CRD_FILE):
        assert filecmp.cmp(CHART / "crds" / name, REPO_ROOT / "manifests" / "crds" / name, shallow=False), (
            f"charts/esteira/crds/{name} differs from manifests/crds/{name}: copy it over"
        )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted([CRD_FILE, COMMAND_CRD_FILE])
    generated = yaml.safe_load((REPO_ROOT / "manifests" / "crds" / COMMAND_CRD_FILE).read_text())
    assert generated == build_command_crd(), f"regenerate manifests/crds/{COMMAND_CRD_FILE}"


def test_chart_metadata() -> None:
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["version"] == "0.1.0"
    assert CHART_META["appVersion"] == "0.1.0"


@pytest.mark.parametrize("case", MATRIX)
def test_lint_strict(case: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=MATRIX[case])
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("case", MATRIX)
def test_every_object_validates(case: str) -> None:
    """Core kinds against Kubernetes 1.37 (strict), custom resources against their CRDs (upstream and Esteira's)."""
    validate_manifests(render(MATRIX[case]))


@pytest.mark.parametrize("case", MATRIX)
def test_namespaced_objects_name_their_namespace(case: str) -> None:
    """Objects carry their namespace so `helm template | kubectl apply` and GitOps put them in the right place."""
    allowed = {NAMESPACE, *values_of(case)["watchNamespaces"]}
    for obj in render(MATRIX[case]):
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert namespace is None, f"{obj['kind']} {obj['metadata']['name']} is cluster-scoped"
        else:
            assert namespace in allowed, f"{obj['kind']} {obj['metadata']['name']}: namespace {namespace!r}"


def operator_container(rendered: Any) -> dict[str, Any]:
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("case", MATRIX)
def test_operator_deployment(case: str) -> None:
    values = values_of(case)
    deployment = render(MATRIX[case]).one("Deployment")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = operator_container(render(MATRIX[case]))
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "two operators without peering would both act"
    assert pod["automountServiceAccountToken"] is True, "the operator needs its token for the API"
    assert container["resources"] == values["resources"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}
    (volume,) = pod["volumes"]
    assert "emptyDir" in volume
    if values["image"]["digest"]:
        assert container["image"] == f"{values['image']['repository']}@{values['image']['digest']}"
    else:
        assert container["image"] == f"esteira/operator:{CHART_META['appVersion']}"
    assert container["imagePullPolicy"] == values["image"]["pullPolicy"]


@pytest.mark.parametrize("case", MATRIX)
def test_operator_security_context(case: str) -> None:
    pod = render(MATRIX[case]).one("Deployment")["spec"]["template"]["spec"]
    context = operator_container(render(MATRIX[case]))["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 1000
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert restricted_violations(pod) == []


@pytest.mark.parametrize("case", MATRIX)
def test_probes_and_ports_match_the_operator_flags(case: str) -> None:
    """The probe and the metrics Service point at the ports the operator was told to listen on."""
    rendered = render(MATRIX[case])
    container = operator_container(rendered)
    config = parse_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": config.metrics_port, "liveness": config.liveness_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    service = rendered.one("Service")
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("case", MATRIX)
def test_operator_args_parse_into_the_values(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered arguments go through the operator's real parser and mean what the values say."""
    for name in ("ESTEIRA_NAMESPACES", "ESTEIRA_PROMETHEUS_URL", "ESTEIRA_LOG_FORMAT", "ESTEIRA_INGRESS_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    values = values_of(case)
    config = parse_args(operator_container(render(MATRIX[case]))["args"])
    operator = values["operator"]
    if values["rbac"]["scope"] == "cluster":
        assert (config.all_namespaces, config.namespaces) == (True, ())
    else:
        assert (config.all_namespaces, config.namespaces) == (False, tuple(values["watchNamespaces"]))
    assert config.prometheus_url == (operator["prometheusUrl"] or None)
    assert config.ingress_domain == operator["ingressDomain"]
    assert config.resync_seconds == operator["resyncSeconds"]
    assert config.rollout_tick_seconds == operator["rolloutTickSeconds"]
    assert config.full_read_seconds == operator["fullReadSeconds"]
    assert config.api_concurrency == operator["apiConcurrency"]
    assert config.log_format == operator["logFormat"]
    assert config.verbose is operator["verbose"]
    assert (config.metrics_port, config.liveness_port) == (operator["metricsPort"], operator["livenessPort"])
    assert config.kubeconfig is None, "in the cluster the operator uses its ServiceAccount"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("defaults", {"ClusterServingRuntime"}),
        ("monitoring", {"ClusterServingRuntime", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}),
        ("no-runtime", set()),
    ],
)
def test_switches(case: str, expected: set[str]) -> None:
    optional = {"ClusterServingRuntime", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    assert render(MATRIX[case]).kinds() & optional == expected


def test_namespaced_mode_objects() -> None:
    rendered = render(MATRIX["namespaced"])
    assert {r["metadata"]["namespace"] for r in rendered.of_kind("Role")} == {"team-a", "team-b"}
    assert {b["metadata"]["namespace"] for b in rendered.of_kind("RoleBinding")} == {"team-a", "team-b"}
    podmonitor = render(MATRIX["namespaced-monitoring"]).one("PodMonitor")
    assert podmonitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_dashboards_are_labelled_for_the_grafana_sidecar() -> None:
    configmaps = render(MATRIX["monitoring"]).of_kind("ConfigMap")
    assert all(configmap["metadata"]["labels"]["grafana_dashboard"] == "1" for configmap in configmaps)
    assert sorted(name for configmap in configmaps for name in configmap["data"]) == [
        "esteira-deployment.json",
        "esteira.json",
    ]


def test_service_account_token_only_in_the_operator_pod() -> None:
    account = render().one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert "ServiceAccount" not in render(MATRIX["custom"]).kinds(), "serviceAccount.create=false"
    pod = render(MATRIX["custom"]).one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == CUSTOM["serviceAccount"]["name"]


# --- values.schema.json -------------------------------------------------------------------------

# name -> (values, what helm's schema error must point at)
TYPOS: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key": ({"imagee": {"tag": "1"}}, "additional properties 'imagee' not allowed"),
    "unknown nested key": ({"operator": {"prometheusURL": "http://p:9090"}}, "'prometheusURL' not allowed"),
    "misspelt switch": ({"monitoring": {"serviceMonitor": {"enable": True}}}, "'enable' not allowed"),
    "string for a port": ({"operator": {"metricsPort": "8080"}}, "at '/operator/metricsPort'"),
    "unknown scope": ({"rbac": {"scope": "Cluster"}}, "at '/rbac/scope'"),
    "unknown log format": ({"operator": {"logFormat": "text"}}, "at '/operator/logFormat'"),
    "namespaced without namespaces": ({"rbac": {"scope": "namespaced"}}, "at '/watchNamespaces': minItems"),
    "namespaces in cluster mode": ({"watchNamespaces": ["team-a"]}, "at '/watchNamespaces': maxItems"),
    "invalid namespace name": (
        {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["Team_A"]},
        "at '/watchNamespaces/0'",
    ),
    "duration without unit": ({"monitoring": {"serviceMonitor": {"interval": "30"}}}, "serviceMonitor/interval'"),
    "bad digest": ({"image": {"digest": "latest"}}, "at '/image/digest'"),
    "idle poll past a millisecond": (
        {"kserveRuntime": {"idlePollMicroseconds": 5000}},
        "at '/kserveRuntime/idlePollMicroseconds'",
    ),
    "no worker": ({"kserveRuntime": {"workers": 0}}, "at '/kserveRuntime/workers'"),
    "workers neither a number nor auto": ({"kserveRuntime": {"workers": "many"}}, "at '/kserveRuntime/workers'"),
}


@pytest.mark.parametrize(("values", "error"), TYPOS.values(), ids=TYPOS.keys())
def test_values_typos_fail_template(values: dict[str, Any], error: str) -> None:
    with pytest.raises(HelmError) as failed:
        render(values)
    assert "schema" in failed.value.stderr
    assert error in failed.value.stderr


def test_values_typo_fails_install() -> None:
    with pytest.raises(HelmError, match="imagee"):
        notes({"imagee": {"tag": "1"}})


def test_schema_knows_every_value() -> None:
    """values.yaml and values.schema.json describe the same keys (the schema rejects what it does not know)."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())

    def keys(values: dict[str, Any], node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{prefix}{key} is in values.yaml but not in the schema"
            out.add(prefix + key)
            sub = node["properties"][key]
            if isinstance(value, dict) and sub.get("properties"):
                out |= keys(value, sub, f"{prefix}{key}.")
        return out

    def schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for key, sub in node.get("properties", {}).items():
            out.add(prefix + key)
            out |= schema_keys(sub, f"{prefix}{key}.")
        return out

    assert schema_keys(schema) - {"global"} == keys(DEFAULTS, schema)


# --- NOTES.txt ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["defaults", "namespaced", "no-runtime"])
def test_notes_say_what_to_do_next(case: str) -> None:
    text = notes(MATRIX[case])
    namespace = "models" if case != "namespaced" else "team-a"
    for step in ("kubectl get md", f"kubectl esteira status iris -n {namespace}", f"kubectl apply -n {namespace}"):
        assert step in text
    example = re.search(r"<<'YAML'\n(.*?)\n\s*YAML\n", text, re.DOTALL)
    assert example, "NOTES carry an example ModelDeployment"
    md = yaml.safe_load(example.group(1))
    md["metadata"]["namespace"] = namespace
    validate_custom_resource(md)
    assert md["spec"]["model"]["runtime"] == values_of(case)["servingRuntime"]["name"]


# --- Pod Security Standards, restricted profile ---------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected"}
ALLOWED_VOLUMES |= {"secret"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard (Kubernetes 1.37) rejects in a pod spec."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            found.append(f"{flag} is set")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds - ALLOWED_VOLUMES)} not allowed")
    if pod_context.get("runAsUser") == 0:
        found.append("pod runs as UID 0")
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        name = container["name"]
        context = container.get("securityContext") or {}
        merged = {**pod_context, **context}
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if merged.get("runAsNonRoot") is not True:
            found.append(f"{name}: runAsNonRoot must be true")
        if merged.get("runAsUser") == 0:
            found.append(f"{name}: runs as UID 0")
        if (merged.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
    return found


def test_restricted_checker_rejects_what_the_profile_rejects() -> None:
    pod = copy.deepcopy(render().one("Deployment")["spec"]["template"]["spec"])
    assert restricted_violations(pod) == []
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    container = pod["containers"][0]
    del container["securityContext"]["allowPrivilegeEscalation"]
    container["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    pod["securityContext"]["runAsNonRoot"] = False
    del container["securityContext"]["runAsNonRoot"]
    assert len(restricted_violations(pod)) == 6


@pytest.mark.parametrize("case", ["defaults", "custom"])
def test_model_server_runtimes_are_restricted(case: str) -> None:
    runtimes = render(MATRIX[case]).of_kind("ClusterServingRuntime")
    assert len(runtimes) == 2
    for runtime in runtimes:
        spec = runtime["spec"]
        assert restricted_violations({"containers": spec["containers"], "volumes": spec["volumes"]}) == []
