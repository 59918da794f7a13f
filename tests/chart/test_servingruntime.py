"""The chart's ClusterServingRuntimes are the ones Esteira's Python builders render: one source per runtime.

The templates are generated from ``esteira.packaging.servingruntime`` and ``esteira.packaging.kserve_servingruntime``
(``python -m tests.chart.runtime_template``); these tests fail when a builder changed and its template was not
regenerated, and when the rendered chart differs from the builder's output for the same image and options.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
import yaml

from esteira.packaging.kserve_servingruntime import KServeRuntimeOptions, render_kserve_serving_runtime
from esteira.packaging.servingruntime import RuntimeOptions
from esteira.vocabulary import ESTEIRA_KSERVE_RUNTIME, ESTEIRA_RUNTIME
from tests.chart.helm import CHART, merge, render
from tests.chart.runtime_template import KSERVE, RUNTIME_TEMPLATES, TORCHSERVE, RuntimeTemplate, render_template

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
BY_KEY = pytest.mark.parametrize("runtime", RUNTIME_TEMPLATES, ids=[t.values_key for t in RUNTIME_TEMPLATES])
RUNTIME_NAMES = {TORCHSERVE.values_key: ESTEIRA_RUNTIME, KSERVE.values_key: ESTEIRA_KSERVE_RUNTIME}


@BY_KEY
def test_template_is_generated_from_the_builder(runtime: RuntimeTemplate) -> None:
    assert runtime.path.read_text() == render_template(runtime), (
        f"{runtime.path.name} is stale: run `python -m tests.chart.runtime_template`"
    )


@BY_KEY
def test_chart_defaults_are_the_builders(runtime: RuntimeTemplate) -> None:
    """Without overrides the chart installs what the runtime's options would default to."""
    defaults = VALUES[runtime.values_key]
    builder = {
        f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(runtime.options)
    }
    assert defaults["name"] == builder["name"] == RUNTIME_NAMES[runtime.values_key]
    assert defaults["resources"] == {"requests": builder["requests"], "limits": builder["limits"]}
    assert defaults["image"]["pullPolicy"] == builder["image_pull_policy"]
    assert (defaults["tmpSizeLimit"] or None) == builder["tmp_size_limit"]


CASES: dict[str, tuple[dict[str, Any], RuntimeOptions]] = {
    "defaults": ({}, RuntimeOptions(image=f"REPOSITORY:{CHART_META['appVersion']}")),
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


@BY_KEY
@pytest.mark.parametrize(("values", "options"), CASES.values(), ids=CASES.keys())
def test_rendered_runtime_equals_the_builders(
    runtime: RuntimeTemplate, values: dict[str, Any], options: RuntimeOptions
) -> None:
    """Each runtime's chart object equals its builder's; the other runtime's values do not leak into it."""
    other = next(t for t in RUNTIME_TEMPLATES if t is not runtime)
    rendered = render(merge({runtime.values_key: values, other.values_key: {"enabled": False}}))
    if not values:  # the defaults: each runtime's own repository and name
        default_repository = VALUES[runtime.values_key]["image"]["repository"]
        options = runtime.options(image=options.image.replace("REPOSITORY", default_repository))
    else:  # the runtime's own options (its defaults, and its name unless the values give one)
        given = {f.name: getattr(options, f.name) for f in fields(options) if f.name != "name" or "name" in values}
        options = runtime.options(**given)
    assert rendered.one("ClusterServingRuntime") == runtime.builder(options)


def test_both_runtimes_install_side_by_side() -> None:
    names = {r["metadata"]["name"] for r in render(merge({})).of_kind("ClusterServingRuntime")}
    assert names == {ESTEIRA_RUNTIME, ESTEIRA_KSERVE_RUNTIME}


def test_template_generation_notices_a_changed_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder change (a new env var here) changes the generated template, so the sync test above fails."""
    import esteira.packaging.kserve_servingruntime as builder

    original = builder._env

    def with_extra_env(options: KServeRuntimeOptions) -> list[dict[str, Any]]:
        return [*original(options), {"name": "ESTEIRA_NEW_SETTING", "value": "1"}]

    monkeypatch.setattr(builder, "_env", with_extra_env)
    assert "ESTEIRA_NEW_SETTING" in render_template(KSERVE)
    assert "ESTEIRA_NEW_SETTING" not in KSERVE.path.read_text()


@pytest.mark.parametrize(
    ("value", "option", "setting", "variable"),
    [
        ("idlePollMicroseconds", "idle_poll_us", 200, "ESTEIRA_IDLE_POLL_US"),
        ("workers", "workers", 4, "ESTEIRA_WORKERS"),
        ("workers", "workers", "auto", "ESTEIRA_WORKERS"),
    ],
)
def test_the_kserve_runtimes_own_settings_come_from_their_values(
    value: str, option: str, setting: int | str, variable: str
) -> None:
    rendered = render(merge({"kserveRuntime": {value: setting}, "servingRuntime": {"enabled": False}}))
    default_repository = VALUES["kserveRuntime"]["image"]["repository"]
    image = f"{default_repository}:{CHART_META['appVersion']}"
    options = KServeRuntimeOptions(image=image, **{option: setting})
    assert rendered.one("ClusterServingRuntime") == render_kserve_serving_runtime(options)
    env = {e["name"]: e.get("value") for e in rendered.one("ClusterServingRuntime")["spec"]["containers"][0]["env"]}
    assert env[variable] == str(setting)
