"""RolloutCommand: a person's instruction to one ModelDeployment's rollout, as its own object.

Creating one needs only `create` on `rolloutcommands`, so a cluster can let people promote, pause, resume,
abort or retry a rollout without letting them edit any spec. The operator carries each one out once and
records the outcome in its status; `spec.requestedBy` says who asked, and the chart's admission policy makes
it the creator's own user name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from esteira.api.spec import MAX_NAME_LENGTH, NAME_PATTERN, SpecModel, cel
from esteira.api.status import StatusModel
from esteira.vocabulary import Command

COMMAND_KIND = "RolloutCommand"
COMMAND_PLURAL = "rolloutcommands"
# A rollback to an earlier revision names that revision's build in the spec, so it stays a spec edit.
CommandAction = Literal["promote", "pause", "resume", "abort", "retry"]


ROLLOUT_COMMAND_ID_PREFIX = "rolloutcommand/"  # a RolloutCommand's id in status; an annotation's has none


class RolloutCommandSpec(SpecModel):
    """What is asked, of which ModelDeployment in this namespace, and by whom. Immutable once created."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [cel("self == oldSelf", "a RolloutCommand cannot be changed")]}
    )

    deployment: str = Field(pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH, description="The ModelDeployment.")
    action: CommandAction
    full: bool = Field(default=False, description="With promote: make the canary stable now.")
    requested_by: str = Field(
        min_length=1,
        max_length=253,
        description="Who asked: the creator's user name (the chart's ValidatingAdmissionPolicy checks it).",
    )

    def command(self, uid: str) -> Command:
        """The engine's command; the object's uid is its id, so it is carried out once."""
        return Command(id=f"{ROLLOUT_COMMAND_ID_PREFIX}{uid}", action=self.action, full=self.full)


class RolloutCommandStatus(StatusModel):
    """The outcome, written once by the operator."""

    phase: Literal["Done", "Ignored", "Rejected"]
    message: str = ""
    completed_at: str


def parse_command(body: dict[str, Any]) -> tuple[RolloutCommandSpec, RolloutCommandStatus | None]:
    """Spec and status of a RolloutCommand object; ValueError when the spec is unreadable."""
    spec = RolloutCommandSpec.model_validate(body.get("spec") or {})
    raw_status = body.get("status") or {}
    status = RolloutCommandStatus.model_validate(raw_status) if raw_status.get("phase") else None
    return spec, status
