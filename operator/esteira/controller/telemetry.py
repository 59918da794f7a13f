"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "esteira_operator_reconciles_total",
    "Reconciles of ModelDeployments by result (created, updated, unchanged, invalid, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "esteira_operator_reconcile_duration_seconds",
    "Time to reconcile one ModelDeployment, API calls included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MANAGED = Gauge("esteira_operator_managed_deployments", "ModelDeployments the operator currently manages.")
API_RETRIES = Counter("esteira_operator_api_retries_total", "API calls retried after a transient error.")
ROLLOUTS = Counter(
    "esteira_operator_rollouts_total", "Canary rollouts finished, by outcome (Promoted, RolledBack).", ["outcome"]
)
for _outcome in ("Promoted", "RolledBack"):
    ROLLOUTS.labels(_outcome)  # exported at 0 so increase() sees the first rollback

DRIFT_EVALUATIONS = Counter(
    "esteira_operator_drift_evaluations_total",
    "Drift evaluations of stable revisions by verdict (Drifted, Stable, NoData).",
    ["verdict"],
)
DRIFT_EVALUATION_ERRORS = Counter(
    "esteira_operator_drift_evaluation_errors_total", "Drift evaluations without evidence (metrics unavailable)."
)
DRIFT_SCORE = Gauge(
    "esteira_operator_drift_score",
    "Last drift score per deployment and feature (the status's top features only, so bounded).",
    ["namespace", "deployment", "feature"],
)
_drift_features: dict[tuple[str, str], set[str]] = {}


def record_drift(namespace: str, name: str, scores: dict[str, float]) -> None:
    """Set this deployment's feature scores and drop the series of features no longer reported."""
    for feature in _drift_features.get((namespace, name), set()) - set(scores):
        DRIFT_SCORE.remove(namespace, name, feature)
    for feature, score in scores.items():
        DRIFT_SCORE.labels(namespace, name, feature).set(score)
    _drift_features[(namespace, name)] = set(scores)
