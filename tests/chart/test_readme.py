"""The chart's README keeps up with the chart: every value with its default, every permission, every alert."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART, MATRIX, REPO_ROOT, render

SCRIPT = REPO_ROOT / "hack" / "chart-readme.py"
README = (CHART / "README.md").read_text()


def chart_readme() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_readme", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_readme"] = module
    spec.loader.exec_module(module)
    return module


def test_values_table_is_current() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += leaf_paths(value, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_every_value_is_listed_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = dict(re.findall(r"^\| `([\w.]+)` \| \w+ \| `(.*?)` \|", README, re.MULTILINE))
    for path in leaf_paths(values):
        parts = path.split(".")
        listed = [".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in rows]
        assert listed, f"{path} is not in charts/esteira/README.md"
        node: Any = values
        for part in listed[0].split("."):
            node = node[part]
        assert yaml.safe_load(rows[listed[0]]) == node, f"{listed[0]}: README default differs from values.yaml"


def test_undocumented_value_is_refused() -> None:
    module = chart_readme()
    text = "image:\n  # -- Documented.\n  repository: x\n  tag: ''\n"
    with pytest.raises(ValueError, match=r"image\.tag has no `# --` description"):
        module.parse_values(text)
    documented = module.parse_values("# -- A map, documented as a whole.\nresources:\n  limits:\n    cpu: 1\n")
    assert [(v.path, v.default) for v in documented] == [("resources", {"limits": {"cpu": 1}})]


def test_every_permission_is_explained() -> None:
    rows = set(re.findall(r"^\| `?([\w.]+)`? \| `([\w/]+)`", README, re.MULTILINE))
    rows = {("" if group == "core" else group, resource) for group, resource in rows}
    for case in ("defaults", "namespaced"):
        for role in [*render(MATRIX[case]).of_kind("ClusterRole"), *render(MATRIX[case]).of_kind("Role")]:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        assert (group, resource) in rows, (
                            f"{group or 'core'}/{resource} missing from the Permissions table"
                        )


def test_every_alert_is_explained() -> None:
    rule = render(MATRIX["monitoring"]).one("PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert f"| `{alert['alert']}` |" in README
