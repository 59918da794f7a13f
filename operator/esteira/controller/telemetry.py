"""The operator's own Prometheus metrics."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "esteira_operator_reconciles_total",
    "Reconciles of ModelDeployments by result (created, updated, unchanged, invalid, error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "esteira_operator_reconcile_duration_seconds",
    "Time to reconcile one ModelDeployment, API calls included.",
    # Fine below 100 ms, where an unchanged reconcile lands, so p50 and p99 read from it mean something.
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_READS = Counter(
    "esteira_operator_reconcile_reads_total",
    "Reconciles by what they planned from: watch (what the watches delivered; nothing read from the API server), "
    "api (read from the API server) or stale (planned from the watches, which proved behind the API server when the "
    "plan was to act: planned again, and counted again as api).",
    ["source"],
)
for _source in ("watch", "api", "stale"):
    RECONCILE_READS.labels(_source)
MANAGED = Gauge("esteira_operator_managed_deployments", "ModelDeployments the operator currently manages.")
API_RETRIES = Counter("esteira_operator_api_retries_total", "API calls retried after a transient error.")
API_CALLS = Counter(
    "esteira_operator_api_calls_total",
    "Kubernetes API calls made by verb (get, list, create, patch, delete), retries included: the operator's load "
    "on the API server.",
    ["verb"],
)
API_VERBS = ("get", "list", "create", "patch", "delete")
for _verb in API_VERBS:
    API_CALLS.labels(_verb)
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


# Per-deployment state for alerts and dashboards (one series per deployment, so bounded by what is managed).
READY = Gauge(
    "esteira_operator_deployment_ready",
    "1 when the ModelDeployment's Ready condition is True, else 0.",
    ["namespace", "deployment"],
)
CANARY_WEIGHT = Gauge(
    "esteira_operator_canary_weight",
    "Share of traffic (%) the canary receives; 0 without a canary.",
    ["namespace", "deployment"],
)
CANARY_HELD = Gauge(
    "esteira_operator_canary_held",
    "1 while the canary is held (paused or waiting), by hold reason; absent without a hold.",
    ["namespace", "deployment", "hold"],
)
DATA_DRIFTED = Gauge(
    "esteira_operator_data_drifted",
    "1 while the DataDrifted condition is True, else 0.",
    ["namespace", "deployment"],
)
_holds: dict[tuple[str, str], str] = {}


def record_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Export the written status as gauges: readiness, canary weight and hold, drift."""
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    READY.labels(namespace, name).set(1 if conditions.get("Ready") == "True" else 0)
    DATA_DRIFTED.labels(namespace, name).set(1 if conditions.get("DataDrifted") == "True" else 0)
    canary = status.get("canary") or {}
    CANARY_WEIGHT.labels(namespace, name).set(canary.get("weight", 0))
    hold = canary.get("hold") or ("PausedByRequest" if canary.get("paused") else None)
    previous = _holds.pop((namespace, name), None)
    if previous is not None and previous != hold:
        CANARY_HELD.remove(namespace, name, previous)
    if hold is not None:
        CANARY_HELD.labels(namespace, name, hold).set(1)
        _holds[(namespace, name)] = hold


def forget_deployment(namespace: str, name: str) -> None:
    """Drop a deleted deployment's series so dashboards and alerts stop showing it."""
    for gauge in (READY, CANARY_WEIGHT, DATA_DRIFTED):
        with contextlib.suppress(KeyError):  # never reconciled, or forgotten before
            gauge.remove(namespace, name)
    hold = _holds.pop((namespace, name), None)
    if hold is not None:
        CANARY_HELD.remove(namespace, name, hold)
    for feature in _drift_features.pop((namespace, name), set()):
        DRIFT_SCORE.remove(namespace, name, feature)
