"""PromQL for the evidence each check needs, per arm, over one analysis interval.

The series come from Esteira's handlers through TorchServe's Prometheus endpoint; the scrape adds the
pod's `namespace`, and the chart's PodMonitor its ModelDeployment (`modeldeployment`, from the pod's label), which
keeps apart two ModelDeployments of one namespace that serve one model name (their revision numbers are alike
too). A scrape without that label still matches: the selector takes series without it. Label names live in
`MetricNames` so a different scrape setup changes one place.

Counts that feed a significance test are taken exactly (`window_count`), not with `increase()`, which
extrapolates the samples it finds to the window's edges: over an interval a few scrapes long that inflates
every count by up to half again or more, and a chi-square test on inflated counts finds differences
significant that are not (good canaries failed the prediction-shift check in 3.5 % of analyses against its
1 % gate; `tests.bench.shift_bench` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricNames:
    requests: str = "esteira_requests_total"
    # Each request's time in the model server, queueing and batching included (not the handler's per batch).
    duration_bucket: str = "esteira_server_request_duration_seconds_bucket"
    predictions: str = "esteira_predictions_total"
    drift_bins: str = "esteira_drift_bin_total"
    drift_reference: str = "esteira_drift_reference"
    drift_reference_predictions: str = "esteira_drift_reference_predictions"
    drift_instances: str = "esteira_drift_instances_total"
    quality_violations: str = "esteira_data_quality_violations_total"
    feature_label: str = "feature"
    bin_label: str = "bin"
    kind_label: str = "kind"
    namespace_label: str = "namespace"
    deployment_label: str = "modeldeployment"
    model_label: str = "ModelName"
    revision_label: str = "Revision"
    outcome_label: str = "outcome"
    class_label: str = "class"
    server_error: str = "server_error"


@dataclass(frozen=True)
class DriftQueries:
    """One revision's input bins, their reference, violations and predictions over a window.

    The reference gauges are the same on every replica, so `max` keeps one copy; counters add up.
    """

    bins: str
    reference: str
    instances: str
    violations: str
    predictions: str
    reference_predictions: str


@dataclass(frozen=True)
class ArmQueries:
    requests: str
    errors: str
    latency_p95: str
    class_counts: str
    drift: DriftQueries


def label_value(value: str) -> str:
    """`value` escaped for a PromQL label matcher's double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class Scope:
    """Whose series: a ModelDeployment (its name a DNS label: nothing a regular expression reads as special)
    and the model name its server reports."""

    namespace: str
    deployment: str
    model: str


def _selector(names: MetricNames, scope: Scope, revision: int) -> str:
    return (
        f'{names.namespace_label}="{label_value(scope.namespace)}",'
        f'{names.deployment_label}=~"{label_value(scope.deployment)}|",'
        f'{names.model_label}="{label_value(scope.model)}",{names.revision_label}="{revision}"'
    )


def window_count(series: str, window: str) -> str:
    """A counter's exact growth over `window`: its newest sample in the window minus its last sample at least
    `window` old.

    The newest sample is the window's last (`last_over_time`), not the instant value, so a pod that stopped
    inside the window (gone, or its scrapes failing while its container restarts, which marks its series
    stale) still counts what it served until then. A series with no sample that old (born inside the window:
    handlers publish their counters at 0 when the model loads) counts its whole value, and so does one that
    restarted inside it (`resets`: its process counted from zero again), whether it is below its value a window
    ago or has climbed past it: by the difference alone, a restarted server's requests (climbed) and errors
    (not yet) were counted two ways, and its error rate was made up. Vector matching ignores the metric name, so
    `unless` and `or` take exactly those series out and back.
    """
    newest = f"last_over_time({series}[{window}])"
    grown = f"(({newest}) - ({series} offset {window})) >= 0"
    return f"(({grown}) unless (resets({series}[{window}]) > 0)) or {newest}"


def drift_queries(names: MetricNames, scope: Scope, revision: int, window: str) -> DriftQueries:
    selector = _selector(names, scope, revision)
    per_bin = f"{names.feature_label}, {names.bin_label}"
    return DriftQueries(
        bins=f"sum by ({per_bin}) ({window_count(f'{names.drift_bins}{{{selector}}}', window)})",
        reference=f"max by ({per_bin}) ({names.drift_reference}{{{selector}}})",
        instances=f"sum({window_count(f'{names.drift_instances}{{{selector}}}', window)})",
        violations=f"sum by ({names.feature_label}, {names.kind_label}) "
        f"({window_count(f'{names.quality_violations}{{{selector}}}', window)})",
        predictions=f"sum by ({names.class_label}) ({window_count(f'{names.predictions}{{{selector}}}', window)})",
        reference_predictions=f"max by ({names.class_label}) ({names.drift_reference_predictions}{{{selector}}})",
    )


def arm_queries(names: MetricNames, scope: Scope, revision: int, interval: str) -> ArmQueries:
    selector = _selector(names, scope, revision)
    # Client errors (bad input) are the caller's; only server errors count against a revision.
    server_errors = f'{names.requests}{{{selector},{names.outcome_label}="{names.server_error}"}}'
    return ArmQueries(
        requests=f"sum({window_count(f'{names.requests}{{{selector}}}', interval)})",
        errors=f"sum({window_count(server_errors, interval)})",
        # A quantile of rates: extrapolation scales every bucket alike, so `rate` serves.
        latency_p95=f"histogram_quantile(0.95, sum by (le) (rate({names.duration_bucket}{{{selector}}}[{interval}])))",
        class_counts=f"sum by ({names.class_label}) ({window_count(f'{names.predictions}{{{selector}}}', interval)})",
        drift=drift_queries(names, scope, revision, interval),
    )


def render_custom(query: str, namespace: str, name: str, revision: int, interval: str) -> str:
    """Fill a custom check's `{{namespace}}`, `{{name}}`, `{{revision}}` and `{{interval}}` placeholders."""
    values = {"namespace": namespace, "name": name, "revision": str(revision), "interval": interval}
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value)
    return query
