"""The ModelDeployment's phase, one function for every runtime (the operator and `esteira up`)."""

from __future__ import annotations

from typing import Literal

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus, Phase

# How the stable revision's server is doing, as the runtime sees it.
Serving = Literal["ready", "failed", "pending"]


def phase_of(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, serving: Serving) -> Phase:
    """Degraded beats everything (users must see a failing server), then the rollout, then serving state."""
    if serving == "failed":
        return "Degraded"
    if status.canary is not None:
        return "Paused" if status.canary.paused else "Progressing"
    last = status.last_rollout
    if (
        last is not None
        and last.outcome == "RolledBack"
        and (last.model_version, last.storage_uri) == (spec.model.version, spec.model.storage_uri)
    ):
        return "RolledBack"
    return "Ready" if serving == "ready" else "Pending"
