"""From the spec's words to the judging policy, and whether drift holds a canary."""

from __future__ import annotations

from datetime import datetime

from esteira.api.spec import DriftMonitoring, ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.drift.evaluate import DriftPolicy, FeatureRule
from esteira.vocabulary import parse_time, series_label


def policy_of(drift: DriftMonitoring | None) -> DriftPolicy:
    """The spec's `monitoring.drift` as a policy; the documented defaults when it is absent. A feature's
    override is keyed by the name its series carry (`petal length (cm)` is counted as `petal_length_(cm)`)."""
    if drift is None:
        return DriftPolicy()
    return DriftPolicy(
        method=drift.method,
        threshold=drift.threshold,
        features={series_label(f.name): FeatureRule(f.method, f.threshold) for f in drift.features},
        min_sample=drift.min_sample,
        dataset_share=drift.dataset_share,
    )


def _retrained_since(status: ModelDeploymentStatus, since: datetime) -> bool:
    """Whether the canary's build came from a retraining run triggered at or after ``since``."""
    if status.canary is None or status.retraining is None:
        return False
    version = status.canary.model_version
    return any(run.version == version and parse_time(run.at) >= since for run in status.retraining.runs)


def rollout_blocked_by_drift(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> str | None:
    """Why a canary may not advance (BlockRollouts during a drift incident), or None.

    A build retrained since the incident began is the answer to it, not a change made blind to it: held, the
    incident it was trained to end (stable's inputs drift from stable's reference) never ends, and neither
    does the hold."""
    drift, monitoring = spec.monitoring.drift, status.monitoring
    if drift is None or "BlockRollouts" not in drift.actions or monitoring is None or not monitoring.drifting_since:
        return None
    if _retrained_since(status, parse_time(monitoring.drifting_since)):
        return None
    names = ", ".join(f.name for f in monitoring.features if f.verdict == "Drift")
    return f"inputs drifting since {monitoring.drifting_since} ({names or 'see status.monitoring'}): BlockRollouts"
