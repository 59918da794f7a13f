"""What traffic the rendered objects must carry: a stable arm and, during a rollout, a canary arm."""

from __future__ import annotations

from dataclasses import dataclass

from esteira.api.spec import ModelDeploymentSpec


@dataclass(frozen=True)
class Arm:
    """One revision of the model as it is served."""

    revision: int
    model_version: str
    storage_uri: str

    @property
    def predictor_name(self) -> str:
        """Predictor name for KServe Standard-mode canaries; stable across re-renders of a revision."""
        return f"rev-{self.revision}"


@dataclass(frozen=True)
class TrafficPlan:
    """The arms to serve and the canary's share of traffic (0-100)."""

    stable: Arm
    canary: Arm | None = None
    canary_weight: int = 0
    # The canary gets a copy of every request stable answers (rollout.mirror, before its first step).
    mirror: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.canary_weight <= 100:
            raise ValueError(f"canary weight {self.canary_weight} is outside 0-100")
        if self.canary is None and self.canary_weight:
            raise ValueError("a canary weight needs a canary arm")
        if self.mirror and (self.canary is None or self.canary_weight):
            raise ValueError("copies go to a canary that takes no traffic of its own")

    @classmethod
    def first_revision(cls, spec: ModelDeploymentSpec) -> TrafficPlan:
        """The plan for a ModelDeployment seen for the first time: revision 1 takes all traffic."""
        return cls(stable=Arm(1, spec.model.version, spec.model.storage_uri))
