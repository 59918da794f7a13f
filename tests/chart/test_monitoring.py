"""Prometheus Operator objects and the Grafana dashboard: valid PromQL, alerts that fire when they should, and
queries against metrics that exist.

The alerting rules are checked with the real `promtool check rules` and unit-tested with `promtool test rules`
(tests/chart/promtool/alerts.test.yaml). Every metric a rule or panel reads must be one the operator
(``esteira.controller.telemetry``) or the model server handlers (``model_handlers/metrics.yaml``) export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from esteira.api.status import Outcome
from esteira.controller import telemetry as operator_metrics
from esteira.packaging.front_metrics import RequestDurations, ServerAnswers, model_labels, with_front_metrics
from esteira.packaging.servingruntime import HTTP_PORT, METRICS_PORT
from esteira.rollout.queries import MetricNames
from esteira.vocabulary import LABEL_DEPLOYMENT, LABEL_REVISION
from model_handlers.metrics import ABANDONED_REQUESTS
from model_handlers.protocol import Identity
from tests.chart.helm import CHART, MATRIX, NAMESPACE, REPO_ROOT, merge, notes, render
from tests.support.prerequisites import require_tool

PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
HANDLER_METRICS = REPO_ROOT / "model_handlers" / "metrics.yaml"
# Metrics the rules and dashboard read that the operator does not export yet: rollouts by outcome
# (`esteira_operator_rollouts_total{outcome="Promoted"|"RolledBack"}`). Remove a name once it is exported.
# The values the promtool unit tests are written for: the chart's default thresholds and alert labels.
# The operator alerts read what the ServiceMonitor scrapes: the chart refuses rules without it.
RULES_ONLY = {"monitoring": {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}}}


def promtool() -> str:
    return require_tool("promtool")


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = render(values).one("PrometheusRule")["spec"]["groups"]
    return groups


def write_rules(groups: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
# Grafana's variables as Grafana fills them with "All" selected.
ALL = {"$__rate_interval": "5m", "$namespace": ".*", "$model": ".*", "$deployment": ".*"}


def dashboard(name: str = "esteira") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "dashboards" / f"{name}.json").read_text())
    return loaded


def dashboard_queries(selected: dict[str, str] | None = None) -> dict[str, str]:
    """Every dashboard's panel queries, keyed by dashboard, panel and target, with the variables filled in (as
    with "All" selected, unless ``selected`` says another value)."""
    out = {}
    values = {**ALL, **(selected or {})}
    for path in DASHBOARDS:
        for panel in dashboard(path.stem)["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in values.items():
                    expr = expr.replace(variable, value)
                out[f"{path.stem.replace('-', '_')}_panel_{panel['id']}_{target['refId']}"] = expr
    return out


def rule_queries(values: dict[str, Any]) -> dict[str, str]:
    """Each alert's expression; an alert with several severities (error budget burn) joins them with "or"."""
    out: dict[str, str] = {}
    for group in rule_groups(values):
        for rule in group["rules"]:
            out[rule["alert"]] = f"{out[rule['alert']]} or {rule['expr']}" if rule["alert"] in out else rule["expr"]
    return out


# --- exported metric names -----------------------------------------------------------------------


def operator_metric_names() -> set[str]:
    """Sample names the operator's /metrics serves (counters end in _total, histograms have three series)."""
    names = set()
    for value in vars(operator_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def handler_metric_names() -> set[str]:
    """Sample names TorchServe serves on the model servers' port 8082 (model_handlers/metrics.yaml)."""
    declared = yaml.safe_load(HANDLER_METRICS.read_text())
    names = set()
    for section in ("model_metrics", "ts_metrics"):
        for kind, entries in (declared.get(section) or {}).items():
            for entry in entries:
                if kind == "histogram":
                    names |= {f"{entry['name']}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
                else:
                    names.add(entry["name"])
    return names


def front_metric_names() -> set[str]:
    """Sample names the pod's front adds to TorchServe's on port 8082 (esteira.packaging.front_metrics), read off
    what it writes; esteira-kserve serves the same families."""
    labels = model_labels(Identity("iris", "1", "1"), "pod")
    text = with_front_metrics("", "", ServerAnswers(labels), RequestDurations(labels), abandoned=0)
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def kserve_metric_names() -> set[str]:
    """Sample names esteira-kserve serves besides the handler's and the front's families."""
    return {f"{ABANDONED_REQUESTS}_total"}


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(esteira_[a-z0-9_]+|ts_[a-z0-9_]+)\b", expr))


def test_rules_and_dashboard_read_exported_metrics() -> None:
    exported = operator_metric_names() | handler_metric_names() | front_metric_names() | kserve_metric_names()
    used = set()
    for expr in [*rule_queries(MATRIX["monitoring"]).values(), *dashboard_queries().values()]:
        used |= metrics_in(expr)
    unknown = used - exported
    assert not unknown, f"rules or panels read metrics nobody exports: {sorted(unknown)}"
    assert {"esteira_operator_reconciles_total", "esteira_requests_total"} <= used


def test_label_values_match_the_code() -> None:
    """The matchers and groupings use the label names and values the code writes."""
    names = MetricNames()
    rules = rule_queries(MATRIX["monitoring"])
    grouping = f"{names.namespace_label}, {names.model_label}, {names.revision_label}"
    assert grouping in rules["EsteiraModelServerErrors"]
    assert grouping in rules["EsteiraHighLatency"]
    assert f'{names.outcome_label}="{names.server_error}"' in rules["EsteiraModelServerErrors"]
    assert 'outcome="RolledBack"' in rules["EsteiraRolloutRolledBack"]
    assert "RolledBack" in Outcome.__args__
    # The reconciler counts API failures under result="error" (esteira.controller.reconciler).
    assert 'RECONCILES.labels("error")' in (REPO_ROOT / "operator/esteira/controller/reconciler.py").read_text()
    assert 'result="error"' in rules["EsteiraReconcileErrors"]
    assert "esteira_operator_data_drifted" in rules["EsteiraDataDrift"]
    assert 'outcome="server_error"' in rules["EsteiraErrorBudgetBurn"]


def test_the_alerts_the_issue_asks_for_exist() -> None:
    """Drift, data quality, no traffic, not ready, error budget, latency, rollout failed or held, operator errors."""
    assert {
        "EsteiraDataDrift",
        "EsteiraDataQualityViolations",
        "EsteiraNoTraffic",
        "EsteiraModelNotReady",
        "EsteiraErrorBudgetBurn",
        "EsteiraHighLatency",
        "EsteiraRolloutRolledBack",
        "EsteiraRolloutHeld",
        "EsteiraReconcileErrors",
        "EsteiraOperatorDown",
        "EsteiraDriftEvaluationErrors",
    } <= set(rule_queries(RULES_ONLY))


# --- promtool -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["monitoring", "namespaced-monitoring", "custom"])
def test_promtool_check_rules(case: str, tmp_path: Path) -> None:
    done = run_promtool("check", "rules", str(write_rules(rule_groups(MATRIX[case]), tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(len(group["rules"]) for group in rule_groups(MATRIX[case]))
    assert f"SUCCESS: {rules} rules found" in done.stdout


def run_alert_tests(values: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    write_rules(rule_groups(values), folder)
    for test in PROMTOOL_TESTS.glob("*.test.yaml"):
        shutil.copy(test, folder / test.name)
    return run_promtool("test", "rules", *sorted(p.name for p in folder.glob("*.test.yaml")), cwd=folder)


def test_promtool_alert_unit_tests(tmp_path: Path) -> None:
    """Each alert fires on the series it is written for, after its pending time, and not before."""
    done = run_alert_tests(RULES_ONLY, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        name
        for test in PROMTOOL_TESTS.glob("*.test.yaml")
        for name in re.findall(r"alertname: (\w+)", test.read_text())
    }
    assert tested == set(rule_queries(RULES_ONLY)), "every alert has a unit test"


def test_promtool_unit_tests_notice_a_changed_threshold(tmp_path: Path) -> None:
    """With a 20% server-error threshold revision 2 (10% errors) stays quiet, so the unit tests fail."""
    values = merge(RULES_ONLY, {"monitoring": {"prometheusRule": {"serverErrorRatio": 0.2}}})
    done = run_alert_tests(values, tmp_path)
    assert done.returncode != 0
    assert "EsteiraModelServerErrors" in done.stdout + done.stderr


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every panel query (as recording rules), so a typo in PromQL fails here, not in Grafana."""
    rules = [{"record": f"esteira_dashboard:{name}", "expr": expr} for name, expr in dashboard_queries().items()]
    done = run_promtool(
        "check", "rules", str(write_rules([{"name": "dashboard", "rules": rules}], tmp_path)), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- the objects ----------------------------------------------------------------------------------


def test_dashboard_has_the_panels_operators_need() -> None:
    assert {path.stem for path in DASHBOARDS} == {"esteira", "esteira-deployment"}
    deployment = {panel["title"] for panel in dashboard("esteira-deployment")["panels"]}
    assert {
        "Canary weight",
        "Requests per revision",
        "Error ratio per revision",
        "Latency per revision (p50, p95, p99)",
        "Drift score per feature",
        "Data-quality violations per feature",
        "GPU utilisation",
        "GPU memory used",
    } <= deployment
    for path in DASHBOARDS:
        panels = dashboard(path.stem)["panels"]
        assert len({panel["id"] for panel in panels}) == len(panels), f"panel ids are unique in {path.name}"
    board = dashboard()
    titles = {panel["title"] for panel in board["panels"]}
    assert {
        "Reconciles by result",
        "Rollouts by outcome",
        "Requests per revision",
        "Server error ratio per revision",
        "p95 latency per revision",
        "Predicted-class mix per revision",
    } <= titles
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"]), "panel ids are unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    for expr in dashboard_queries().values():
        assert "$" not in expr, f"unknown Grafana variable in {expr} (variables: {sorted(variables)})"


def test_podmonitor_scrapes_the_runtime_metrics_port() -> None:
    """The PodMonitor finds model server pods by the runtime's declared port and scrapes TorchServe's metrics port."""
    podmonitor = render(MATRIX["monitoring"]).one("PodMonitor")
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["portNumber"] == HTTP_PORT
    for runtime in render(MATRIX["monitoring"]).of_kind("ClusterServingRuntime"):
        assert [p["containerPort"] for p in runtime["spec"]["containers"][0]["ports"]] == [HTTP_PORT]
        assert runtime["spec"]["annotations"]["prometheus.kserve.io/port"] == str(METRICS_PORT)
    address = next(r for r in endpoint["relabelings"] if r["targetLabel"] == "__address__")
    assert re.sub(address["regex"], address["replacement"].replace("${1}", r"\1"), "10.1.2.3:8080") == (
        f"10.1.2.3:{METRICS_PORT}"
    )
    assert re.sub(address["regex"], address["replacement"].replace("${1}", r"\1"), "[fd00::7]:8080") == (
        f"[fd00::7]:{METRICS_PORT}"
    )
    assert podmonitor["spec"]["selector"]["matchExpressions"] == [{"key": LABEL_REVISION, "operator": "Exists"}]
    sources = {s for r in endpoint["relabelings"] for s in r.get("sourceLabels", [])}
    assert "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", LABEL_DEPLOYMENT) in sources


def test_servicemonitor_finds_the_metrics_service() -> None:
    rendered = render(MATRIX["monitoring"])
    monitor = rendered.one("ServiceMonitor")
    service = rendered.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [p["name"] for p in service["spec"]["ports"]]
    # Prometheus Operator names the job after the Service: the operator alerts select on it.
    assert f'job="{service["metadata"]["name"]}"' in rule_queries(MATRIX["monitoring"])["EsteiraOperatorDown"]


def test_monitoring_labels_reach_prometheus_selectors() -> None:
    rendered = render(MATRIX["monitoring"])
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert rendered.one(kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for group in rule_groups(MATRIX["monitoring"]):
        for rule in group["rules"]:
            assert rule["labels"]["team"] == "ml-platform"
            assert rule["labels"]["severity"] in {"critical", "warning"}


def test_alert_rules_without_the_servicemonitor_keep_only_the_model_server_alerts_and_say_so() -> None:
    """Without the ServiceMonitor no series has the operator's job label: EsteiraOperatorDown would always fire,
    and the deployment alerts never; the model server alerts read the PodMonitor's series and stay."""
    values = {"monitoring": {"prometheusRule": {"enabled": True}}}
    (rule,) = [doc for doc in render(values) if doc["kind"] == "PrometheusRule"]
    assert [group["name"] for group in rule["spec"]["groups"]] == ["esteira-model-servers"]
    assert "the PrometheusRule holds only the model server alerts" in notes(values)
