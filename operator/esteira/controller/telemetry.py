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
