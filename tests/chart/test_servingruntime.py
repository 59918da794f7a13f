"""The chart's ClusterServingRuntime is the one Esteira's Python builder renders: one source for the runtime.

The template is generated from ``esteira.packaging.servingruntime`` (``python -m tests.chart.runtime_template``);
these tests fail when the builder changed and the template was not regenerated, and when the rendered chart
differs from the builder's output for the same image and options.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
import yaml

from esteira.packaging.servingruntime import RuntimeOptions, render_serving_runtime
from esteira.vocabulary import ESTEIRA_RUNTIME
from tests.chart.helm import CHART, merge, render
from tests.chart.runtime_template import TEMPLATE, render_template

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())["servingRuntime"]


def test_template_is_generated_from_the_builder() -> None:
    assert TEMPLATE.read_text() == render_template(), (
        "charts/esteira/templates/servingruntime.yaml is stale: run `python -m tests.chart.runtime_template`"
    )


def test_chart_defaults_are_the_builders() -> None:
    """Without overrides the chart installs what `RuntimeOptions` would default to."""
    builder = {
        f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(RuntimeOptions)
    }
    assert DEFAULTS["name"] == builder["name"] == ESTEIRA_RUNTIME
    assert DEFAULTS["resources"] == {"requests": builder["requests"], "limits": builder["limits"]}
    assert DEFAULTS["image"]["pullPolicy"] == builder["image_pull_policy"]
    assert (DEFAULTS["tmpSizeLimit"] or None) == builder["tmp_size_limit"]


CASES: dict[str, tuple[dict[str, Any], RuntimeOptions]] = {
    "defaults": ({}, RuntimeOptions(image=f"esteira/model-server:{CHART_META['appVersion']}")),
    "custom": (
        {
            "name": "esteira-torchserve-gpu",
            "image": {"repository": "registry.example.com/ms", "tag": "0.1.0-cu124", "pullPolicy": "Always"},
            "resources": {
                "requests": {"cpu": "2", "memory": "8Gi"},
                "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
            },
            "tmpSizeLimit": "20Gi",
        },
        RuntimeOptions(
            image="registry.example.com/ms:0.1.0-cu124",
            name="esteira-torchserve-gpu",
            requests={"cpu": "2", "memory": "8Gi"},
            limits={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
            tmp_size_limit="20Gi",
            image_pull_policy="Always",
        ),
    ),
    "digest": (
        {"image": {"repository": "registry.example.com/ms", "digest": "sha256:" + "0f" * 32}},
        RuntimeOptions(image="registry.example.com/ms@sha256:" + "0f" * 32),
    ),
}


@pytest.mark.parametrize(("values", "options"), CASES.values(), ids=CASES.keys())
def test_rendered_runtime_equals_the_builders(values: dict[str, Any], options: RuntimeOptions) -> None:
    rendered = render(merge({"servingRuntime": values})).one("ClusterServingRuntime")
    assert rendered == render_serving_runtime(options)


def test_template_generation_notices_a_changed_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder change (a new env var here) changes the generated template, so the sync test above fails."""
    import esteira.packaging.servingruntime as builder
    import tests.chart.runtime_template as generator

    original = builder._env

    def with_extra_env() -> list[dict[str, Any]]:
        return [*original(), {"name": "TS_NEW_SETTING", "value": "1"}]

    monkeypatch.setattr(builder, "_env", with_extra_env)
    monkeypatch.setattr(generator, "render_serving_runtime", builder.render_serving_runtime)
    assert "TS_NEW_SETTING" in generator.render_template()
    assert "TS_NEW_SETTING" not in TEMPLATE.read_text()
