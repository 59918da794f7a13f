"""PromQL for the evidence each check needs, per arm, over one analysis interval.

The series come from Esteira's handlers through TorchServe's Prometheus endpoint; the scrape adds the
pod's `namespace`. Label names live in `MetricNames` so a different scrape setup changes one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricNames:
    requests: str = "esteira_requests_total"
    duration_bucket: str = "esteira_request_duration_seconds_bucket"
    predictions: str = "esteira_predictions_total"
    drift: str = "esteira_data_drift_score"
    namespace_label: str = "namespace"
    model_label: str = "ModelName"
    revision_label: str = "Revision"
    outcome_label: str = "outcome"
    class_label: str = "class"
    server_error: str = "server_error"


@dataclass(frozen=True)
class ArmQueries:
    requests: str
    errors: str
    latency_p95: str
    class_counts: str
    drift: str


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def arm_queries(names: MetricNames, namespace: str, model: str, revision: int, interval: str) -> ArmQueries:
    selector = (
        f'{names.namespace_label}="{_escape(namespace)}",{names.model_label}="{_escape(model)}",'
        f'{names.revision_label}="{revision}"'
    )
    window = f"[{interval}]"
    return ArmQueries(
        requests=f"sum(increase({names.requests}{{{selector}}}{window}))",
        # Client errors (bad input) are the caller's; only server errors count against a revision.
        errors=f'sum(increase({names.requests}{{{selector},{names.outcome_label}="{names.server_error}"}}{window}))',
        latency_p95=f"histogram_quantile(0.95, sum by (le) (rate({names.duration_bucket}{{{selector}}}{window})))",
        class_counts=f"sum by ({names.class_label}) (increase({names.predictions}{{{selector}}}{window}))",
        drift=f"max({names.drift}{{{selector}}})",
    )


def render_custom(query: str, namespace: str, name: str, revision: int, interval: str) -> str:
    """Fill a custom check's `{{namespace}}`, `{{name}}`, `{{revision}}` and `{{interval}}` placeholders."""
    values = {"namespace": namespace, "name": name, "revision": str(revision), "interval": interval}
    for key, value in values.items():
        query = query.replace("{{" + key + "}}", value)
    return query
