"""Running the real `helm` binary on charts/esteira, for the chart tests.

`helm template` needs no cluster, so every test renders the chart the way `helm install` would and checks
the objects it would send. Renders are cached per set of values: the chart does not change during a run.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.prerequisites import find_tool, require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "esteira"
RELEASE = "esteira"
NAMESPACE = "esteira-system"


def helm_path() -> str | None:
    """`helm` from PATH, else the copy `hack/install-tools.sh` puts in .tools/bin."""
    return find_tool("helm")


def require_helm() -> str:
    """The helm binary; skips the calling test (with one line saying how to get it) when there is none."""
    return require_tool("helm")


class HelmError(AssertionError):
    """helm exited non-zero; ``stderr`` says why."""

    def __init__(self, args: list[str], stderr: str) -> None:
        self.stderr = stderr
        super().__init__(f"helm {' '.join(args)} failed:\n{stderr}")


def run_helm(*args: str, values: Mapping[str, Any] | None = None) -> str:
    """Run helm with ``values`` (written to a temporary file and passed with -f); returns stdout."""
    helm = require_helm()
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        if values:
            path = Path(tmp) / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            extra = ["-f", str(path)]
        done = subprocess.run([helm, *args, *extra], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise HelmError(list(args), done.stderr)
    return done.stdout


@dataclass(frozen=True)
class Rendered:
    """The objects `helm install` would create (CRDs included), and the NOTES it would print."""

    objects: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {obj["kind"] for obj in self.objects}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.objects)


@functools.cache
def _render(values_json: str) -> Rendered:
    out = run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", values=json.loads(values_json)
    )
    return Rendered(tuple(doc for doc in yaml.safe_load_all(out) if doc))


def render(values: Mapping[str, Any] | None = None) -> Rendered:
    """`helm template` of the chart as release ``esteira`` in ``esteira-system``."""
    return _render(json.dumps(values or {}, sort_keys=True))


def notes(values: Mapping[str, Any] | None = None) -> str:
    """What `helm install` prints after installing (NOTES.txt), from a client-side dry run."""
    out = run_helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", values=values)
    _, found, text = out.partition("NOTES:\n")
    assert found, f"helm install printed no NOTES:\n{out}"
    return text


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge values layers, later ones winning (as repeated -f files do)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


NAMESPACED = {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a", "team-b"]}
MONITORING = {
    "monitoring": {
        "labels": {"release": "kube-prometheus-stack"},
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "alertLabels": {"team": "ml-platform"}},
        "dashboards": {"enabled": True, "labels": {"grafana_folder": "esteira"}},
    }
}
NO_RUNTIME = {"servingRuntime": {"enabled": False}, "kserveRuntime": {"enabled": False}}
CUSTOM = {
    "image": {"repository": "registry.example.com/esteira/operator", "digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "registry"}],
    "operator": {
        "prometheusUrl": "http://prometheus.monitoring:9090",
        "ingressDomain": "models.example.org",
        "verbose": True,
        "logFormat": "plain",
        "metricsPort": 9100,
        "livenessPort": 9101,
        "resyncSeconds": 120,
        "rolloutTickSeconds": 2.5,
        "fullReadSeconds": 0,
    },
    "serviceAccount": {"create": False, "name": "esteira-operator"},
    "podLabels": {"team": "ml"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
    "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    "servingRuntime": {"image": {"tag": "0.1.0-cu124", "pullPolicy": "Always"}, "tmpSizeLimit": "20Gi"},
}

# The values every chart test renders: each switch on and off, both RBAC modes.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": NAMESPACED,
    "monitoring": MONITORING,
    "namespaced-monitoring": merge(NAMESPACED, MONITORING),
    "no-runtime": NO_RUNTIME,
    "custom": merge(CUSTOM, MONITORING),
}
