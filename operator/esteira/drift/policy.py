"""From the spec's words to the judging policy, and whether drift holds a canary."""

from __future__ import annotations

from esteira.api.spec import DriftMonitoring, ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.drift.evaluate import DriftPolicy, FeatureRule


def policy_of(drift: DriftMonitoring | None) -> DriftPolicy:
    """The spec's `monitoring.drift` as a policy; the documented defaults when it is absent."""
    if drift is None:
        return DriftPolicy()
    return DriftPolicy(
        method=drift.method,
        threshold=drift.threshold,
        features={f.name: FeatureRule(f.method, f.threshold) for f in drift.features},
        min_sample=drift.min_sample,
        dataset_share=drift.dataset_share,
    )


def rollout_blocked_by_drift(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> str | None:
    """Why a canary may not advance (BlockRollouts during a drift incident), or None."""
    drift, monitoring = spec.monitoring.drift, status.monitoring
    if drift is None or "BlockRollouts" not in drift.actions or monitoring is None or not monitoring.drifting_since:
        return None
    names = ", ".join(f.name for f in monitoring.features if f.verdict == "Drift")
    return f"inputs drifting since {monitoring.drifting_since} ({names or 'see status.monitoring'}): BlockRollouts"
