"""Revision bookkeeping: which model build is stable, which is the canary, and the bounded history.

A revision is a (model version, storageUri) pair; its number grows by one each time the spec names a
pair that is neither the stable nor the canary one. Other spec changes (resources, scaling) re-render the
current revisions without making a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esteira.api.spec import ModelDeploymentSpec, Validation
from esteira.api.status import (
    HISTORY_LIMIT,
    CanaryRecord,
    HistoryEntry,
    ModelDeploymentStatus,
    Outcome,
    RevisionRecord,
    RolloutRecord,
    RunOutcome,
)
from esteira.render.traffic import Arm, TrafficPlan
from esteira.retraining.gate import Candidate, GateVerdict, judge_candidate
from esteira.vocabulary import Decision


@dataclass
class RevisionChange:
    status: ModelDeploymentStatus
    decisions: list[Decision] = field(default_factory=list)


def _same_build(record: RevisionRecord | RolloutRecord | None, spec: ModelDeploymentSpec) -> bool:
    return (
        record is not None
        and record.model_version == spec.model.version
        and record.storage_uri == spec.model.storage_uri
    )


def finish_history(history: list[HistoryEntry], revision: int, outcome: Outcome, reason: str, now: str) -> None:
    for index, entry in enumerate(history):
        if entry.revision == revision and entry.outcome == "Active":
            history[index] = entry.model_copy(update={"outcome": outcome, "finished_at": now, "reason": reason})


def _start(history: list[HistoryEntry], record: RevisionRecord, reason: str) -> list[HistoryEntry]:
    entry = HistoryEntry(
        revision=record.revision,
        model_version=record.model_version,
        storage_uri=record.storage_uri,
        started_at=record.since,
        outcome="Active",
        reason=reason,
        card=record.card,
    )
    return [entry, *history][:HISTORY_LIMIT]


def track_revisions(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    now: str,
    retry: bool = False,
    rollback_to: int | None = None,
) -> RevisionChange:
    """Give a newly declared model build a revision and place it as stable or canary.

    A build that was just rolled back is not tried again until the spec names another one, or `retry`
    asks for it: a canary of another build running means the spec named one since. `rollback_to` (a person's
    rollback to an earlier revision, whose build the spec now names) makes the build stable at once instead of
    canarying it.
    """
    status = status.model_copy(deep=True)
    change = RevisionChange(status)
    stable = status.stable
    if stable is not None and _same_build(stable, spec) and status.canary is None:
        if rollback_to is not None:  # else it would be said Done, though nothing changed
            why = f"rollback: the spec names stable revision {stable.revision}'s build already"
            change.decisions.append(Decision("CommandIgnored", why, warning=True))
        return change
    if _same_build(status.canary, spec):
        return change
    rejected = status.last_rollout
    if (
        rejected is not None
        and rejected.outcome != "Promoted"
        and _same_build(rejected, spec)
        and status.canary is None
        and not retry
        and rollback_to is None  # a person's rollback to that build makes it stable; skipped, it was said Done
    ):
        return change

    if status.canary is not None:
        reason = (
            f"spec returned to stable revision {status.stable.revision}"
            if status.stable and _same_build(status.stable, spec)
            else f"model version {spec.model.version} replaced it mid-rollout"
        )
        finish_history(status.history, status.canary.revision, "Superseded", reason, now)
        change.decisions.append(Decision("CanarySuperseded", f"Canary revision {status.canary.revision}: {reason}"))
        status.canary = None
        if _same_build(status.stable, spec):
            return change

    revision = status.latest_revision + 1
    status.latest_revision = revision
    record = RevisionRecord(
        revision=revision,
        model_version=spec.model.version,
        storage_uri=spec.model.storage_uri,
        since=now,
        card=spec.model.card,
    )
    immediate = status.stable is None or spec.rollout.strategy == "Immediate" or not spec.rollout.steps
    # A retrained candidate is gated before it is placed, Immediate or not: placed first, an Immediate rollout
    # made a candidate that scored far below stable the stable at once.
    gate = None if status.stable is None or rollback_to is not None else _gate(spec, status)
    if gate is not None and not gate.proposed:
        refusal = gate.reason
        status.history = _start(status.history, record, "retrained candidate")
        finish_history(status.history, revision, "Rejected", refusal, now)
        status.last_rollout = RolloutRecord(
            revision=revision,
            model_version=record.model_version,
            storage_uri=record.storage_uri,
            outcome="Rejected",
            reason=refusal,
            at=now,
        )
        _record_candidate(status, spec, "RejectedCandidate", refusal)
        change.decisions.append(
            Decision(
                "CandidateRejected", f"Revision {revision} (model {spec.model.version}) not rolled out: {refusal}", True
            )
        )
        return change
    if gate is not None:
        _record_candidate(status, spec, "Proposed", f"rolled out: {gate.reason}")
    elif spec.retraining is not None:
        _record_candidate(status, spec, "Proposed", "rolled out as a canary")
    if immediate or rollback_to is not None:
        if status.stable is not None:
            finish_history(
                status.history, status.stable.revision, "Superseded", f"replaced by revision {revision}", now
            )
        if status.stable is None:
            why = "first revision"
        elif rollback_to is not None:
            why = f"rollback to the build of revision {rollback_to} by request"
        else:
            why = "rollout strategy Immediate"
        status.stable = record
        status.history = _start(status.history, record, why)
        change.decisions.append(
            Decision("RevisionCreated", f"Revision {revision} (model {spec.model.version}) is stable: {why}")
        )
    else:
        stable_revision = status.stable.revision if status.stable else 0
        status.canary = CanaryRecord(**record.model_dump(), weight=0, step=0, step_started_at=now)
        status.history = _start(status.history, record, "canary rollout")
        gated = f" (the retraining gate: {gate.reason})" if gate is not None else ""
        change.decisions.append(
            Decision(
                "CanaryCreated",
                f"Revision {revision} (model {spec.model.version}) is the canary against stable revision "
                f"{stable_revision}; it receives no traffic until it is ready{gated}",
            )
        )
    return change


def _gate(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> GateVerdict | None:
    """Whether a new build may roll out (its card's validation score against stable's), and why; None where no
    gate applies.

    Only where retraining is on, and then for every new build with a card: a retraining run's build and a
    person's look the same here. Without retraining, every new version gets a canary.
    A candidate without a score of its own, or without a stable score of its metric to compare with, rolls out
    and the canary's analysis judges it, the reason saying so. Cards that disagree on which way the metric is
    better are a mistake in one of them: the candidate is refused rather than judged the wrong way round.
    """
    if spec.retraining is None:
        return None
    card = spec.model.card
    if card is None or card.validation is None:
        return GateVerdict(True, "the candidate's card has no validation score")
    mine = card.validation
    theirs = status.stable.card.validation if status.stable and status.stable.card else None
    if theirs is not None and theirs.metric == mine.metric and theirs.better != mine.better:
        return GateVerdict(
            False,
            f"the cards disagree on which way {mine.metric} is better (candidate: {mine.better}, stable: "
            f"{theirs.better}): correct the candidate's card",
        )
    stable_score, basis = _stable_score(mine, status.stable)
    return judge_candidate(
        Candidate(spec.model.version, mine.metric, mine.score),
        stable_score,
        spec.retraining.candidate_margin,
        mine.better,
        basis,
    )


def _stable_score(mine: Validation, stable: RevisionRecord | None) -> tuple[float | None, str]:
    """Stable's score to beat and where it was measured: on the candidate's own rows when its card carries a
    baseline for the stable version (like for like), else stable's own card (its own held-out rows)."""
    if stable is None:
        return None, ""
    if mine.baseline is not None and mine.baseline.version == stable.model_version:
        return mine.baseline.score, "on the same held-out rows"
    theirs = stable.card.validation if stable.card is not None else None
    if theirs is None or theirs.metric != mine.metric:
        return None, ""  # scores of different metrics say nothing about each other
    return theirs.score, "on its own card's held-out rows"


def _record_candidate(status: ModelDeploymentStatus, spec: ModelDeploymentSpec, outcome: RunOutcome, why: str) -> None:
    """The retraining run that produced this build (the newest one) learns what became of it.

    A run may still be Running: a command or Job edits the spec before it exits. A card that names its run
    (`retrainingRun`) credits that one only, and if its webhook had not answered yet, it got the event all the
    same: the build it asked for is here, and the event is not sent again. Without one, the newest open run
    whose event (if any) was delivered: a build cannot answer a request nobody received.
    """
    runs = status.retraining.runs if status.retraining else []
    named = spec.model.card.retraining_run if spec.model.card else None
    for index, run in enumerate(runs):
        if (named is not None and run.run != named) or (named is None and run.webhook == "Pending"):
            continue
        if run.outcome in ("Running", "Sending", "Succeeded", "Sent") and run.version in (None, spec.model.version):
            update: dict[str, Any] = {"outcome": outcome, "version": spec.model.version, "message": why}
            if run.webhook == "Pending":
                update |= {"webhook": "Accepted", "webhook_next_at": None}
            runs[index] = run.model_copy(update=update)
            return


def traffic_plan(status: ModelDeploymentStatus) -> TrafficPlan:
    """The arms the rendered objects must serve, read from status (which track_revisions filled)."""
    if status.stable is None:
        raise ValueError("no stable revision recorded")
    stable = Arm(status.stable.revision, status.stable.model_version, status.stable.storage_uri)
    if status.canary is None:
        return TrafficPlan(stable=stable)
    canary = Arm(status.canary.revision, status.canary.model_version, status.canary.storage_uri)
    return TrafficPlan(stable=stable, canary=canary, canary_weight=status.canary.weight, mirror=status.canary.mirroring)
