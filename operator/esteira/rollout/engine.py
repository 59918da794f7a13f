"""The rollout engine: (spec, status, evidence, now) -> (new status, decisions). Pure and clock-free.

The canary record in status is the whole state: its weight, step, when the step started, failed checks in
a row, whether it is paused and since when it has not been ready. Each analysis interval the checks run on the
evidence; all passing moves to the next step (or promotes after the last), failures past `rollout.threshold`
roll back, and too little traffic extends the step until `lowTrafficDeadline`, then pauses or fails as
configured. A canary not ready for `rollout.progressDeadline` rolls back. Missing evidence never promotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from esteira.api.command import ROLLOUT_COMMAND_ID_PREFIX
from esteira.api.spec import DEFAULT_STEPS, ModelDeploymentSpec
from esteira.api.status import (
    TRANSIENT_HOLDS,
    CanaryRecord,
    CheckResult,
    Hold,
    ModelDeploymentStatus,
    RevisionRecord,
    RolloutRecord,
)
from esteira.drift.policy import policy_of, rollout_blocked_by_drift
from esteira.rollout.checks import run_checks
from esteira.rollout.evidence import Evidence
from esteira.rollout.inputs import RolloutInput
from esteira.rollout.revisions import finish_history
from esteira.vocabulary import Decision, format_time, parse_duration, parse_time


@dataclass
class EngineOutput:
    status: ModelDeploymentStatus
    decisions: list[Decision] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until the engine wants to run again


def analysis_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> bool:
    """Whether the adapter should gather evidence now (saves Prometheus queries between intervals)."""
    canary = status.canary
    if canary is None or canary.paused or not (canary.weight or canary.mirroring) or not canary.step_started_at:
        return False
    last = parse_time(canary.last_analysis_at or canary.step_started_at)
    return now - last >= parse_duration(spec.rollout.interval)


def _close_rollout(
    status: ModelDeploymentStatus, outcome: Literal["Promoted", "RolledBack"], reason: str, now: str
) -> None:
    """The canary leaves; how its rollout ended is kept so a rolled-back build is not retried by itself."""
    canary = status.canary
    assert canary is not None
    status.canary = None
    status.last_rollout = RolloutRecord(
        revision=canary.revision,
        model_version=canary.model_version,
        storage_uri=canary.storage_uri,
        outcome=outcome,
        reason=reason,
        at=now,
        checks=canary.checks,
    )


def promote(status: ModelDeploymentStatus, now: str, reason: str) -> Decision:
    """The canary becomes stable; the old stable's history entry is closed as superseded."""
    canary = status.canary
    assert canary is not None
    previous = status.stable
    finish_history(status.history, canary.revision, "Promoted", reason, now)
    if previous is not None:
        finish_history(status.history, previous.revision, "Superseded", f"replaced by revision {canary.revision}", now)
    status.stable = RevisionRecord(
        revision=canary.revision,
        model_version=canary.model_version,
        storage_uri=canary.storage_uri,
        since=now,
        card=canary.card,  # the next candidate is judged against the promoted build's own score
    )
    _close_rollout(status, "Promoted", reason, now)
    return Decision("Promoted", f"Revision {canary.revision} (model {canary.model_version}) promoted: {reason}")


def roll_back(status: ModelDeploymentStatus, now: str, reason: str) -> Decision:
    """All traffic returns to stable and the canary is closed as rolled back."""
    canary = status.canary
    assert canary is not None
    finish_history(status.history, canary.revision, "RolledBack", reason, now)
    _close_rollout(status, "RolledBack", reason, now)
    stable = status.stable.revision if status.stable else "?"
    return Decision(
        "RolledBack",
        f"Revision {canary.revision} (model {canary.model_version}) rolled back to revision {stable}: {reason}",
        warning=True,
    )


def canary_steps(spec: ModelDeploymentSpec) -> list[int]:
    """The weights a canary goes through. A canary made under steps that were then emptied (``Immediate`` for the
    next rollout) goes on through the default steps: judged before it is promoted, as it was made to be, its checks
    against stable included (none runs at 100%)."""
    return spec.rollout.steps or list(DEFAULT_STEPS)


def _hold(canary: CanaryRecord, hold: Hold | None, message: str | None = None) -> None:
    canary.hold, canary.pause_reason = hold, message


def _progress_left(spec: ModelDeploymentSpec, since: str | None, now: datetime) -> tuple[str, float]:
    """When a wait began (``since``, else now) and the seconds `rollout.progressDeadline` leaves it."""
    began = parse_time(since) if since else now
    return format_time(began), (began + parse_duration(spec.rollout.progress_deadline) - now).total_seconds()


def _await_readiness(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime, out: EngineOutput
) -> EngineOutput:
    """A canary that is not ready is held, and rolled back once it has not been for `rollout.progressDeadline`:
    one that never loads, or stops serving after it took traffic, does not hold the rollout (and its share of
    traffic) for ever."""
    canary = status.canary
    assert canary is not None
    deadline = spec.rollout.progress_deadline
    canary.unready_since, left = _progress_left(spec, canary.unready_since, now)
    if left <= 0:
        out.decisions.append(
            roll_back(status, format_time(now), f"not ready for {deadline} (rollout.progressDeadline)")
        )
        return out
    _hold(
        canary,
        "WaitingForReadiness",
        f"waiting for the canary to become ready: not ready since {canary.unready_since}, rolled back after {deadline}",
    )
    out.requeue_after = min(5.0, left)
    return out


def _await_router(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime, out: EngineOutput, message: str
) -> EngineOutput:
    """Held until the router sends the weight asked for, and rolled back once it has not for
    `rollout.progressDeadline` (a router that never acts would hold the canary and its traffic for ever). The step
    starts again from each such look: the traffic until then went at another weight, and an analysis due meanwhile
    judged the new step on the old one's."""
    canary = status.canary
    assert canary is not None
    deadline = spec.rollout.progress_deadline
    canary.router_behind_since, left = _progress_left(spec, canary.router_behind_since, now)
    if left <= 0:
        reason = f"the router did not send the canary its weight for {deadline} (rollout.progressDeadline): {message}"
        out.decisions.append(roll_back(status, format_time(now), reason))
        return out
    _hold(canary, "WaitingForRouter", message)
    if canary.weight > 0 or canary.mirroring:
        canary.step_started_at, canary.last_analysis_at = format_time(now), None
    out.requeue_after = min(5.0, left)
    return out


def _enter_step(canary: CanaryRecord, spec: ModelDeploymentSpec, index: int, now: str) -> Decision:
    """Move to step `index`, or stop before it when a person must approve it first."""
    weight = canary_steps(spec)[index]
    canary.step = index
    canary.failed_checks = 0
    canary.last_analysis_at = None
    if weight in spec.rollout.pause_before and canary.weight < weight:
        canary.paused = True
        _hold(canary, "WaitingForPromotion", f"waiting for promote before step {index + 1} ({weight}%)")
        canary.step_started_at = now
        return Decision("WaitingForPromotion", f"Canary revision {canary.revision}: {canary.pause_reason}")
    canary.weight = weight
    canary.step_started_at = now
    _hold(canary, None)
    return Decision(
        "StepAdvanced",
        f"Canary revision {canary.revision} at {weight}% (step {index + 1}/{len(canary_steps(spec))})",
    )


def _copies_due(canary: CanaryRecord, inp: RolloutInput) -> bool:
    """Whether the canary is still to get its copies of stable's requests before its first step."""
    return _copies_go_on(inp) and canary.copies is None and canary.weight == 0


def _copies_go_on(inp: RolloutInput) -> bool:
    """Whether copies asked for can come: the spec asks and the router copies (one changed meanwhile ends them)."""
    return inp.spec.rollout.mirror and inp.router_copies


def _begin(canary: CanaryRecord, inp: RolloutInput, now: str) -> list[Decision]:
    """A ready canary's first move: where `rollout.mirror` asks, copies of stable's requests and no traffic of
    its own, until an analysis of them passes; else its first step. A mirror turned off meanwhile ends the copies
    unjudged; a router that cannot copy (KServe's split) skips them, and says so."""
    spec = inp.spec
    if _copies_due(canary, inp):
        canary.copies, canary.step_started_at, canary.failed_checks = "Sending", now, 0
        canary.last_analysis_at = None
        _hold(canary, None)
        message = (
            f"Canary revision {canary.revision} gets a copy of every request stable answers (rollout.mirror) and "
            "no traffic of its own until an analysis of them passes"
        )
        return [Decision("Mirroring", message)]
    skipped = []
    if spec.rollout.mirror and not inp.router_copies and canary.copies is None:
        message = (
            f"Canary revision {canary.revision} takes its first step without copies of stable's requests: "
            f"rollout.mirror needs a router that copies them (rollout.router GatewayAPI), not {spec.rollout.router}"
        )
        skipped.append(Decision("MirrorUnsupported", message, warning=True))
    if canary.mirroring:
        canary.copies = None  # mirror or the router changed before an analysis judged them
    return [*skipped, _enter_step(canary, spec, 0, now)]


def _gate(canary: CanaryRecord, inp: RolloutInput) -> int | None:
    """The weight of the step the canary waits to enter at a ``pauseBefore`` gate (None: it is at no gate). There
    its step is already the next one and its weight still the last one's: resumed there, it was judged at the last
    weight as if at the gated step, and moved past that step, or promoted, without ever serving it."""
    spec = inp.spec
    steps = canary_steps(spec)
    if canary.step >= len(steps) or canary.mirroring or _copies_due(canary, inp):  # copies come before the gate
        return None
    weight = steps[canary.step]
    return weight if weight in spec.rollout.pause_before and canary.weight < weight else None


def _command(inp: RolloutInput, status: ModelDeploymentStatus, now: str) -> list[Decision]:
    command = inp.command
    if command is None or status.carried_out(command.id):
        return []
    status.last_command = command.id
    if not command.id.startswith(ROLLOUT_COMMAND_ID_PREFIX):  # the annotation's: it stays on the object
        status.last_annotation_command = command.id
    canary = status.canary
    if command.action in ("retry", "rollback"):
        return []  # handled where revisions are tracked
    if canary is None:
        return [Decision("CommandIgnored", f"{command.action}: no rollout in progress", warning=True)]
    if command.action == "abort":
        return [roll_back(status, now, "aborted by request")]
    if command.action == "pause":
        canary.paused = True
        _hold(canary, "PausedByRequest", "paused by request")
        return [Decision("Paused", f"Canary revision {canary.revision} paused by request at {canary.weight}%")]
    if command.action == "resume":
        if (gated := _gate(canary, inp)) is not None:  # only promote opens a pauseBefore gate
            _hold(canary, "WaitingForPromotion", f"waiting for promote before step {canary.step + 1} ({gated}%)")
            message = (
                f"Canary revision {canary.revision}: resume does not pass rollout.pauseBefore; {canary.pause_reason}"
            )
            return [Decision("WaitingForPromotion", message, warning=True)]
        canary.paused = False
        _hold(canary, None)
        canary.step_started_at = now
        # The next analysis an interval on: due at once, it found no evidence (none is read while paused), said
        # the metrics were unavailable and cleared the checks.
        canary.last_analysis_at = now
        canary.unready_since = None  # the progress deadline counts from the resume, as the step does
        canary.router_behind_since = None
        return [Decision("Resumed", f"Canary revision {canary.revision} resumed at {canary.weight}%")]
    # promote
    steps = canary_steps(inp.spec)
    if command.full or (canary.step + 1 >= len(steps) and canary.weight == 100):
        return [promote(status, now, "promoted by request")]
    canary.paused = False
    if canary.mirroring:
        canary.copies = None  # moved on by a person before an analysis judged them
    target = min(canary.step, len(steps) - 1)  # the steps may have been edited shorter meanwhile
    target = min(target + 1 if canary.weight == steps[target] else target, len(steps) - 1)
    canary.weight = steps[target]
    canary.step, canary.step_started_at, canary.failed_checks = target, now, 0
    canary.last_analysis_at = None
    canary.unready_since = None  # as after a resume: a canary unready while paused was rolled back at once
    canary.router_behind_since = None
    _hold(canary, None)
    return [Decision("StepAdvanced", f"Canary revision {canary.revision} moved to {canary.weight}% by request")]


def _summary(checks: list[CheckResult]) -> str:
    return "; ".join(f"{c.name}={c.value} ({c.threshold}, n={c.sample_size}) {c.verdict}" for c in checks)


def _count_failure(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, failed: list[CheckResult], summary: str, now: str
) -> Decision:
    """One more failed analysis at this step: the rollback once they reach `rollout.threshold`."""
    canary = status.canary
    assert canary is not None
    canary.failed_checks += 1
    names = ", ".join(f"{c.name}={c.value} (wanted {c.threshold}, n={c.sample_size})" for c in failed)
    if canary.failed_checks >= spec.rollout.threshold:
        return roll_back(status, now, f"failed checks: {names}")
    return Decision(
        "AnalysisFailed",
        f"Canary revision {canary.revision} at {canary.weight}% failed "
        f"{canary.failed_checks}/{spec.rollout.threshold}: {summary}",
        warning=True,
    )


def _judge_while_held(inp: RolloutInput, status: ModelDeploymentStatus, now: str, out: EngineOutput) -> None:
    """A canary held where it is (drifting inputs) is still judged on the traffic it serves: failing checks roll
    it back as at any step, while passing ones move it nowhere. Held without it, a failing canary kept its share
    of traffic for as long as the inputs drifted."""
    canary = status.canary
    assert canary is not None
    canary.last_analysis_at = now
    if inp.evidence is None:  # judged on nothing: the last analysis' checks would read as this one's
        canary.checks = []
        return
    checks = canary.checks = _judge(inp, canary, inp.evidence)
    failed = [c for c in checks if c.verdict == "Fail"]
    if inp.evidence.canary.requests < inp.spec.rollout.analysis.min_requests:
        return  # too little to judge: neither a failure nor a pass
    if failed:
        out.decisions.append(_count_failure(inp.spec, status, failed, _summary(checks), now))
    elif all(c.verdict == "Pass" for c in checks):
        canary.failed_checks = 0  # failures count in a row


def _step_age(inp: RolloutInput, canary: CanaryRecord) -> tuple[timedelta, timedelta]:
    """How long the canary has been at its step, and how long its labels take to arrive (accuracy's labelDelay)."""
    accuracy = inp.spec.rollout.analysis.accuracy
    step_age = inp.now - parse_time(canary.step_started_at or format_time(inp.now))
    return step_age, parse_duration(accuracy.label_delay) if accuracy else timedelta(0)


def _judge(inp: RolloutInput, canary: CanaryRecord, evidence: Evidence) -> list[CheckResult]:
    """The checks on this interval's evidence; labelled accuracy once the step is older than the labels' delay."""
    analysis = inp.spec.rollout.analysis
    step_age, label_delay = _step_age(inp, canary)
    return run_checks(
        analysis,
        evidence,
        canary.weight,
        labels_due=step_age >= label_delay,
        drift_policy=policy_of(inp.spec.monitoring.drift),
    )


def advance(inp: RolloutInput, tracked: ModelDeploymentStatus) -> EngineOutput:
    """One tick of the engine on `tracked`, the status after revision tracking (`inp.status` is before it)."""
    status = tracked.model_copy(deep=True)
    now = format_time(inp.now)
    out = EngineOutput(status, _command(inp, status, now))
    canary = status.canary
    spec = inp.spec
    interval = parse_duration(spec.rollout.interval)
    if canary is None or canary.paused:
        return out
    route = inp.route.about(canary.revision)
    if not route.applied:
        return _await_router(spec, status, inp.now, out, "waiting for the router to apply the split last written")
    if route.weight is None or route.weight == canary.weight:
        canary.router_behind_since = None
    if not route.ready:
        return _await_readiness(spec, status, inp.now, out)
    canary.unready_since = None
    if route.weight is not None and route.weight != canary.weight:  # what it serves is another step's traffic
        wanted = f"waiting for the router: {route.weight}% observed, {canary.weight}% wanted"
        return _await_router(spec, status, inp.now, out, wanted)
    # Drifting inputs hold the canary where it is, before its first step too: no new traffic while the
    # evidence it would be judged on comes from inputs unlike the training data.
    blocked = rollout_blocked_by_drift(spec, status)
    if blocked:
        if canary.hold != "InputsDrifting":
            out.decisions.append(Decision("RolloutBlocked", f"Canary revision {canary.revision} held: {blocked}", True))
        _hold(canary, "InputsDrifting", blocked)
        out.requeue_after = interval.total_seconds()
        if analysis_due(spec, status, inp.now):
            _judge_while_held(inp, status, now, out)
        return out
    if canary.weight == 0 and canary.step == 0 and not (canary.mirroring and _copies_go_on(inp)):
        out.decisions += _begin(canary, inp, now)
        out.requeue_after = interval.total_seconds()
        return out
    if canary.hold in TRANSIENT_HOLDS:
        _hold(canary, None)  # readiness and router caught up; analysis verdicts keep their reason
    if not analysis_due(spec, status, inp.now):
        last = parse_time(canary.last_analysis_at or canary.step_started_at or now)
        out.requeue_after = max(1.0, (last + interval - inp.now).total_seconds())
        return out

    out.requeue_after = interval.total_seconds()
    canary.last_analysis_at = now
    if inp.evidence is None:
        _hold(canary, "MetricsUnavailable", f"metrics unavailable: {inp.metrics_error or 'no evidence'}")
        canary.checks = []
        out.decisions.append(
            Decision("MetricsUnavailable", f"Canary revision {canary.revision} held: {canary.pause_reason}", True)
        )
        return out

    analysis = spec.rollout.analysis
    step_age, label_delay = _step_age(inp, canary)
    checks = canary.checks = _judge(inp, canary, inp.evidence)
    enough = inp.evidence.canary.requests >= analysis.min_requests
    failed = [c for c in checks if c.verdict == "Fail"]
    waiting = [c for c in checks if c.verdict == "NoData"]
    if not enough or (not failed and waiting):
        if step_age < parse_duration(analysis.low_traffic_deadline) + label_delay:
            because = (
                f"the canary served {int(inp.evidence.canary.requests)} requests in this "
                f"{spec.rollout.interval} interval, {analysis.min_requests} needed"
                if not enough
                else "; ".join(f"{c.name}: {c.message or 'no data'}" for c in waiting)
            )
            _hold(canary, "ExtendingStep", f"extending step: {because}")
            return out
        if analysis.low_traffic_action == "Fail":
            out.decisions.append(roll_back(status, now, "too little traffic to judge before the deadline"))
            return out
        _hold(canary, "LowTraffic", "low traffic: not enough requests to judge; waiting for traffic")
        out.decisions.append(Decision("LowTraffic", f"Canary revision {canary.revision}: {canary.pause_reason}"))
        return out

    summary = _summary(checks)
    if failed:
        _hold(canary, None)
        out.decisions.append(_count_failure(spec, status, failed, summary, now))
        return out

    out.decisions.append(
        Decision("AnalysisPassed", f"Canary revision {canary.revision} at {canary.weight}%: {summary}")
    )
    if canary.mirroring:  # judged on copies: now on traffic of its own
        canary.copies = "Passed"
        out.decisions.append(_enter_step(canary, spec, 0, now))
        return out
    if canary.step + 1 >= len(canary_steps(spec)):
        out.decisions.append(promote(status, now, "passed analysis at every step"))
        out.requeue_after = None
        return out
    out.decisions.append(_enter_step(canary, spec, canary.step + 1, now))
    return out
