"""The ModelDeployment status: what the operator observed and decided, in the shape `kubectl` shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from esteira.api.spec import ModelCard

HISTORY_LIMIT = 10

Phase = Literal[
    "Pending",  # accepted, InferenceService not ready yet
    "Ready",  # stable revision serving all traffic
    "Progressing",  # a canary is taking a growing share of traffic
    "Paused",  # a rollout waits for a person or for traffic
    "Promoting",  # the canary becomes stable
    "RolledBack",  # the last canary failed and traffic is back on stable
    "Degraded",  # the InferenceService reports a failure
    "Failed",  # the operator cannot make progress without a change
    "Invalid",  # the spec was rejected; what was running is left untouched
]
ConditionType = Literal["Ready", "Progressing", "Degraded", "DataDrifted"]
# Why a canary is not moving, as a fixed vocabulary (the message says the details).
Hold = Literal[
    "WaitingForReadiness",  # the canary's server is not ready yet
    "WaitingForRouter",  # the backend has not applied the weight asked for yet
    "WaitingForPromotion",  # a pauseBefore gate waits for `promote`
    "PausedByRequest",  # a person paused it
    "ExtendingStep",  # too few canary requests this interval: the step waits for more
    "LowTraffic",  # the low-traffic deadline passed: waiting for traffic, not judging
    "MetricsUnavailable",  # no evidence: never promote on it
    "InputsDrifting",  # monitoring.drift with BlockRollouts: the stable revision's inputs drift
]
# Holds that clear by themselves once the canary is ready, the router caught up and inputs stopped drifting.
TRANSIENT_HOLDS: tuple[Hold, ...] = ("WaitingForReadiness", "WaitingForRouter", "InputsDrifting")
Outcome = Literal["Active", "Promoted", "RolledBack", "Superseded", "Rejected"]


class StatusModel(BaseModel):
    """Base for status objects: camelCase on the wire; unknown fields kept for forward compatibility."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


CONDITION_MESSAGE_LIMIT = 32768  # as metav1.Condition's


class Condition(StatusModel):
    """A Kubernetes-style condition."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=CONDITION_MESSAGE_LIMIT)
    last_transition_time: str
    observed_generation: int | None = None


class RevisionRecord(StatusModel):
    """One model revision: a number that grows with every new model version or storageUri."""

    revision: int = Field(ge=1)
    model_version: str
    storage_uri: str
    since: str = Field(description="When this revision took its current role (RFC 3339).")
    card: ModelCard | None = Field(default=None, description="The build's model card, as the spec gave it.")


Verdict = Literal["Pass", "Fail", "NoData"]


class CheckResult(StatusModel):
    """One analysis check: what was measured, against what, on how much traffic, and the verdict."""

    name: str
    value: float | None = None
    threshold: str
    sample_size: int = Field(ge=0)
    verdict: Verdict
    message: str = ""


class CanaryRecord(RevisionRecord):
    """The revision under rollout and how far it got."""

    weight: int = Field(default=0, ge=0, le=100, description="Share of traffic (%) the canary receives.")
    step: int = Field(default=0, ge=0, description="Index into rollout.steps.")
    step_started_at: str | None = None
    copies: Literal["Sending", "Passed"] | None = Field(
        default=None,
        description="Copies of stable's requests before the first step (rollout.mirror): Sending while it gets a "
        "copy of every request stable answers and no traffic of its own, Passed once an analysis of them passed.",
    )
    failed_checks: int = Field(default=0, ge=0, description="Failed analyses in a row at this step.")
    paused: bool = Field(default=False, description="Held by a person (pause) or by a pauseBefore gate.")
    hold: Hold | None = Field(default=None, description="Why the canary is not moving, when it is not.")
    pause_reason: str | None = Field(default=None, description="The hold's message.")
    last_analysis_at: str | None = None
    unready_since: str | None = Field(
        default=None,
        description="Since when the canary has not been ready, while it is not (rollout.progressDeadline).",
    )
    router_behind_since: str | None = Field(
        default=None,
        description="Since when the router has not sent the canary the weight asked for, while it has not "
        "(rollout.progressDeadline).",
    )
    checks: list[CheckResult] = Field(default_factory=list, description="The last analysis, one entry a check.")

    @property
    def mirroring(self) -> bool:
        """Getting copies of stable's requests now, and no traffic of its own."""
        return self.copies == "Sending"


class RolloutRecord(StatusModel):
    """How the last rollout ended; a rolled-back build is not tried again until the spec changes."""

    revision: int = Field(ge=1)
    model_version: str
    storage_uri: str
    outcome: Literal["Promoted", "RolledBack", "Rejected"]  # Rejected: a candidate below stable's card score
    reason: str = ""
    at: str
    checks: list[CheckResult] = Field(
        default_factory=list,
        description="The canary's last analysis, one entry a check: for a rollback on failed checks, the one that "
        "decided it (status.canary, which held them, is gone).",
    )


class HistoryEntry(StatusModel):
    """A finished or active revision, newest first, at most HISTORY_LIMIT kept."""

    revision: int = Field(ge=1)
    model_version: str
    storage_uri: str
    started_at: str
    finished_at: str | None = None
    outcome: Outcome
    reason: str = ""
    card: ModelCard | None = None


TOP_FEATURES = 10  # features kept in status.monitoring, most drifted first


class FeatureDrift(StatusModel):
    """One input feature (or the predictions) over the last window."""

    name: str
    method: str
    score: float | None = None
    threshold: float
    p_value: float | None = None
    sample_size: int = Field(ge=0)
    verdict: Literal["Drift", "NoDrift", "NoData"]


class QualityRate(StatusModel):
    """Share of the window's instances with one data-quality violation on one feature."""

    feature: str
    kind: str
    rate: float = Field(ge=0)


class MonitoringStatus(StatusModel):
    """The last drift evaluation of the stable revision's inputs."""

    last_evaluation_time: str | None = None
    revision: int | None = None
    window: str | None = None
    sample_size: int = Field(default=0, ge=0)
    verdict: Literal["Drifted", "Stable", "NoData", "Unknown"] = "Unknown"
    drifted_share: float | None = None
    features: list[FeatureDrift] = Field(default_factory=list, max_length=TOP_FEATURES)
    predictions: FeatureDrift | None = None
    data_quality: list[QualityRate] = Field(default_factory=list, max_length=TOP_FEATURES)
    drifting_since: str | None = Field(default=None, description="Start of the current drift incident.")
    clean_evaluations: int = Field(
        default=0, ge=0, description="Evaluations in a row without drift during the current incident."
    )
    message: str = ""


RUNS_KEPT = 10
RunOutcome = Literal["Running", "Sending", "Succeeded", "Failed", "Sent", "SendFailed", "RejectedCandidate", "Proposed"]
# Where a run's CloudEvent to spec.retraining.webhook stands: Pending until the webhook accepts it (resent with
# backoff meanwhile), then Accepted; Failed once refused for good or out of attempts.
WebhookDelivery = Literal["Pending", "Accepted", "Failed"]


class RetrainingRun(StatusModel):
    """One retraining trigger and what came of it, newest first."""

    run: int = Field(ge=1)
    at: str
    signal: str
    reason: str
    evidence: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    outcome: RunOutcome
    job: str | None = None
    job_seen: bool = Field(
        default=False,
        description="Whether the run's Job has been seen: one gone before its outcome was read is not made again.",
    )
    version: str | None = Field(default=None, description="The model version the run produced, once known.")
    message: str = ""
    webhook: WebhookDelivery | None = Field(
        default=None, description="Where the run's CloudEvent to spec.retraining.webhook stands."
    )
    webhook_attempts: int = Field(default=0, ge=0, description="Deliveries of the CloudEvent tried so far.")
    webhook_next_at: str | None = Field(default=None, description="When the CloudEvent is sent (again).")


class RetrainingStatus(StatusModel):
    """What the retraining trigger remembers: incidents handled, the last trigger, the runs."""

    last_triggered_at: str | None = None
    handled: list[str] = Field(default_factory=list, max_length=50, description="Incidents already acted on.")
    runs: list[RetrainingRun] = Field(default_factory=list, max_length=RUNS_KEPT)
    next_run: int = Field(default=1, ge=1)


class ModelDeploymentStatus(StatusModel):
    """Observed state of a ModelDeployment."""

    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    url: str | None = None
    inference_service: str | None = Field(default=None, description="Name of the managed InferenceService.")
    latest_revision: int = Field(default=0, ge=0, description="Highest revision number handed out so far.")
    stable: RevisionRecord | None = None
    canary: CanaryRecord | None = None
    history: list[HistoryEntry] = Field(default_factory=list, max_length=HISTORY_LIMIT)
    last_rollout: RolloutRecord | None = None
    last_command: str | None = Field(default=None, description="Id of the last manual command carried out.")
    last_annotation_command: str | None = Field(
        default=None,
        description="Id of the last command carried out from the serving.esteira.io/command annotation, which "
        "stays on the object: a RolloutCommand carried out after it must not make it new again.",
    )
    retraining: RetrainingStatus | None = None
    monitoring: MonitoringStatus | None = None
    model_status: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The InferenceService's modelStatus, copied as KServe reports it.",
    )

    def carried_out(self, command_id: str) -> bool:
        """Whether the command with this id was carried out already (the last one, or the annotation's)."""
        return command_id in (self.last_command, self.last_annotation_command)
