"""The retraining part of a reconcile, planned without I/O: signals from status, a trigger, a Job or a
webhook call to make, and what finished Jobs say.

Signals come from what the operator already wrote into status (a drift incident, the data-quality rates of
the last drift evaluation, in status.monitoring), from stable's labelled accuracy the adapter read, and from
the clock; the trigger rules (one per incident, minInterval, one run at a time) are
`esteira.retraining.trigger`'s. A Job's outcome is read from its status conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from esteira.api.spec import ModelDeploymentSpec, Retraining
from esteira.api.status import RUNS_KEPT, ModelDeploymentStatus, RetrainingRun, RetrainingStatus
from esteira.quality.scores import Tally
from esteira.render.inferenceservice import RenderContext
from esteira.render.job import render_retrain_job, retrain_job_name
from esteira.retraining.trigger import History, Policy, Signal, SignalKind, decide
from esteira.vocabulary import Decision, format_time, parse_time

HANDLED_KEPT = 50
# A data-quality incident: one kind of violation (missing, out of range, ...) on one feature in this share of the
# evaluated window's instances or more.
DATA_QUALITY_INCIDENT_RATE = 0.05
# Labelled predictions stable's accuracy needs over triggers.accuracyWindow before it can start a run (the
# accuracy check's default minLabels): a few unlucky labels are no incident.
ACCURACY_MIN_LABELS = 100
# How often, at most, an adapter reads stable's labelled accuracy for triggers.accuracyBelow: an incident lasts
# minutes to hours, and the read is a query over the whole window.
ACCURACY_READ_SECONDS = 60.0
# A CloudEvent the webhook did not accept is sent again after a backoff that doubles from the first, capped, up to
# this many deliveries in all: an endpoint down for a deploy is reached, one gone for good ends the run in hours.
WEBHOOK_DELIVERIES = 8
WEBHOOK_FIRST_RETRY = timedelta(seconds=60)
WEBHOOK_LAST_RETRY = timedelta(minutes=30)
WEBHOOK_REMOVED = "spec.retraining.webhook was removed before the webhook accepted the event; it is not sent"
RETRAINING_REMOVED = "spec.retraining was removed before the webhook accepted the event; it is not sent"


@dataclass
class RetrainPlan:
    """What to do for retraining this reconcile (status is updated in place)."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    webhook_events: list[dict[str, Any]] = field(default_factory=list)  # CloudEvents to POST to spec's webhook
    commands: list[RetrainingRun] = field(default_factory=list)  # runs `esteira up` starts as a command
    decisions: list[Decision] = field(default_factory=list)


def signals_from_status(
    spec: ModelDeploymentSpec, status: ModelDeploymentStatus, stable_accuracy: Tally | None = None
) -> list[Signal]:
    """The incidents status records right now (drift, data quality) and stable's labelled accuracy over
    triggers.accuracyWindow (None: not read), as trigger signals carrying their evidence."""
    found: list[Signal] = []
    monitoring = status.monitoring
    if monitoring is not None and monitoring.verdict == "Drifted" and monitoring.drifting_since:
        drifted = [f for f in monitoring.features if f.verdict == "Drift"]
        evidence: dict[str, Any] = {
            "window": monitoring.window,
            "sampleSize": monitoring.sample_size,
            "driftedShare": monitoring.drifted_share,
            "features": {f.name: {"method": f.method, "score": f.score, "pValue": f.p_value} for f in drifted},
        }
        names = ", ".join(f.name for f in drifted[:5]) or "inputs"
        found.append(Signal("Drift", f"drift-{monitoring.drifting_since}", f"{names} drifted", evidence))
    return found + _data_quality(status) + _accuracy(spec, status, stable_accuracy)


def _data_quality(status: ModelDeploymentStatus) -> list[Signal]:
    """A data-quality incident of the stable revision: one incident a revision, its worst violations the evidence."""
    monitoring = status.monitoring
    if monitoring is None or monitoring.revision is None:
        return []
    over = [q for q in monitoring.data_quality if q.rate >= DATA_QUALITY_INCIDENT_RATE]
    if not over:
        return []
    evidence: dict[str, Any] = {
        "window": monitoring.window,
        "sampleSize": monitoring.sample_size,
        "violations": [{"feature": q.feature, "kind": q.kind, "rate": q.rate} for q in over],
    }
    worst = ", ".join(f"{q.feature} {q.kind} {q.rate:.0%}" for q in over[:3])
    return [Signal("DataQuality", f"data-quality-revision-{monitoring.revision}", f"data quality: {worst}", evidence)]


def _accuracy(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, tally: Tally | None) -> list[Signal]:
    """Stable's labelled accuracy below triggers.accuracyBelow: one incident a stable revision."""
    triggers = spec.retraining.triggers if spec.retraining else None
    if triggers is None or triggers.accuracy_below is None or status.stable is None or tally is None:
        return []
    accuracy = tally.accuracy
    if tally.labelled < ACCURACY_MIN_LABELS or accuracy is None or accuracy >= triggers.accuracy_below:
        return []
    revision = status.stable.revision
    evidence = {
        "window": triggers.accuracy_window,
        "labelled": tally.labelled,
        "accuracy": round(accuracy, 4),
        "accuracyBelow": triggers.accuracy_below,
    }
    summary = f"stable revision {revision}'s labelled accuracy {accuracy:.3f} is below {triggers.accuracy_below}"
    return [Signal("Accuracy", f"accuracy-revision-{revision}", summary, evidence)]


def _policy(spec: ModelDeploymentSpec, retraining: Retraining) -> Policy:
    kinds: set[SignalKind] = set()
    drift = spec.monitoring.drift
    if retraining.triggers.drift or (drift is not None and "Retrain" in drift.actions):
        kinds.add("Drift")
    if retraining.triggers.data_quality:
        kinds.add("DataQuality")
    if retraining.triggers.accuracy_below is not None:
        kinds.add("Accuracy")
    return Policy(frozenset(kinds), retraining.min_interval, retraining.triggers.schedule)


JOB_GONE = (
    "its Job was deleted before its outcome was read (by hand, or by a ttlSecondsAfterFinished shorter than the "
    "operator's next look); it is not run again"
)


def _job_outcome(job: dict[str, Any]) -> tuple[str, str] | None:
    """Succeeded or Failed once the Job controller says so (its Complete/Failed conditions), with the condition's
    reason and message (DeadlineExceeded, BackoffLimitExceeded ...), else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        why = ": ".join(str(part) for part in (condition.get("reason"), condition.get("message")) if part)
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded", why
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed", why
    return None


# Why a trigger started no run, by whether the runtime runs commands.
NOT_RUNNABLE = {
    True: "esteira up runs spec.retraining.command, which is not set; a job and a webhook are a cluster's",
    False: "a cluster runs spec.retraining.job or calls spec.retraining.webhook, and neither is set; a command "
    "runs under esteira up only",
}


def plan_retraining(
    ctx: RenderContext,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    jobs: Mapping[str, dict[str, Any]],
    now: datetime,
    labelled_data: str | None = None,
    stable_accuracy: Tally | None = None,
    runs_commands: bool = False,
) -> RetrainPlan:
    """Record finished runs, then maybe trigger a new one. `jobs`: this deployment's retraining Jobs by name;
    `stable_accuracy`: stable's labelled predictions over triggers.accuracyWindow, where the adapter read them.

    `runs_commands`: whether this runtime can run `retraining.command` (`esteira up` can; a cluster runs
    the Job template and calls the webhook instead).
    """
    plan = RetrainPlan()
    retraining = spec.retraining
    if retraining is None:
        _drop_deliveries(status.retraining, RETRAINING_REMOVED, plan)
        return plan
    # What this runtime can start: `esteira up` its command; a cluster the Job and the webhook.
    runnable = bool(retraining.command) if runs_commands else retraining.job is not None or bool(retraining.webhook)
    state = status.retraining = status.retraining or RetrainingStatus()
    for index, run in enumerate(state.runs):
        if run.outcome != "Running" or run.job is None:
            continue
        if run.job not in jobs:
            if run.job_seen:  # deleted by hand, or by its TTL before its outcome was read: not made again
                state.runs[index] = run.model_copy(update={"outcome": "Failed", "message": JOB_GONE})
                plan.decisions.append(Decision("RetrainingFailed", f"Retraining run {run.run}: {JOB_GONE}", True))
            continue
        ended = _job_outcome(jobs[run.job])
        if not run.job_seen:
            state.runs[index] = run = run.model_copy(update={"job_seen": True})
        if ended is not None:
            outcome, why = ended
            why = why if outcome == "Failed" else ""  # a success's reason is boilerplate (CompletionsReached)
            state.runs[index] = run.model_copy(update={"outcome": outcome, "message": why or run.message})
            said = f"Retraining run {run.run} ({run.job}) {outcome.lower()}" + (f": {why}" if why else "")
            plan.decisions.append(Decision(f"Retraining{outcome}", said, outcome == "Failed"))
    for run in state.runs:
        # A run recorded before its Job was created (the status is written first): create it now.
        if (
            run.outcome == "Running"
            and retraining.job is not None
            and run.job == retrain_job_name(ctx.deployment, run.run)
            and run.job not in jobs
        ):
            plan.jobs.append(render_retrain_job(ctx, retraining.job, run.run, run.reason, run.evidence))
    if not runs_commands:
        _deliveries_due(ctx, retraining, state, now, plan)
    running = next((r.job or str(r.run) for r in state.runs if r.outcome == "Running" or r.webhook == "Pending"), None)
    history = History(frozenset(state.handled), state.last_triggered_at, running)
    signals = signals_from_status(spec, status, stable_accuracy)
    verdict = decide(_policy(spec, retraining), history, signals, now)
    if not verdict.fire or verdict.signal is None:
        return plan
    signal, at, number = verdict.signal, format_time(now), state.next_run
    if not runnable:  # said once an incident, as a run would have started once: recording a run, it ran for ever
        state.handled = [signal.incident, *state.handled][:HANDLED_KEPT]
        state.last_triggered_at = at
        plan.decisions.append(Decision("RetrainingNotRun", f"{signal.summary}: {NOT_RUNNABLE[runs_commands]}", True))
        return plan
    evidence = {"signal": signal.kind, "incident": signal.incident, **signal.evidence}
    if labelled_data:
        evidence["labelledData"] = labelled_data
    if status.stable is not None:  # what a candidate must beat: a run can score it on its own held-out rows
        evidence["stable"] = {"version": status.stable.model_version, "storageUri": status.stable.storage_uri}
    run = RetrainingRun(
        run=number, at=at, signal=signal.kind, reason=signal.summary, evidence=evidence, outcome="Sending"
    )
    if retraining.job is not None:
        job = render_retrain_job(ctx, retraining.job, number, signal.summary, evidence)
        plan.jobs.append(job)
        run = run.model_copy(update={"outcome": "Running", "job": retrain_job_name(ctx.deployment, number)})
    if retraining.webhook is not None and not runs_commands:
        run = run.model_copy(update={"webhook": "Pending", "webhook_next_at": at})
        plan.webhook_events.append(_cloud_event(ctx, run))
    if retraining.command and runs_commands:
        run = run.model_copy(update={"outcome": "Running", "job": f"command-{number}"})
        plan.commands.append(run)
    state.runs = [run, *state.runs][:RUNS_KEPT]
    state.handled = [signal.incident, *state.handled][:HANDLED_KEPT]
    state.last_triggered_at, state.next_run = at, number + 1
    plan.decisions.append(Decision("RetrainingTriggered", f"Retraining run {number}: {signal.summary}"))
    return plan


def _deliveries_due(
    ctx: RenderContext, retraining: Retraining, state: RetrainingStatus, now: datetime, plan: RetrainPlan
) -> None:
    """Plan the CloudEvents still owed to the webhook whose time has come: one refused for now, or one recorded
    before an operator restart could send it (status is written first, so an event is sent at least once; its
    id stays the same, for the receiver to drop a repeat)."""
    if retraining.webhook is None:
        _drop_deliveries(state, WEBHOOK_REMOVED, plan)
        return
    for run in state.runs:
        if run.webhook == "Pending" and (run.webhook_next_at is None or parse_time(run.webhook_next_at) <= now):
            plan.webhook_events.append(_cloud_event(ctx, run))


def end_before_start(runs: list[dict[str, Any]], number: int, outcome: str, message: str) -> list[dict[str, Any]]:
    """The runs (status' wire form) with run ``number`` ended ``outcome`` before it started (its Job refused):
    an event it still owed is not sent, as asking for a retraining that failed misleads."""
    ended = []
    for run in (RetrainingRun.model_validate(raw) for raw in runs):
        if run.run == number:
            update: dict[str, Any] = {"outcome": outcome, "message": message}
            if run.webhook == "Pending":
                update |= {"webhook": "Failed", "webhook_next_at": None}
            run = run.model_copy(update=update)
        ended.append(run.to_wire())
    return ended


def _delivery_failed(run: RetrainingRun, why: str) -> RetrainingRun:
    """The webhook will not get this run's event: a run that had nothing else to do ends SendFailed; one with a
    Job goes on, saying why."""
    update: dict[str, Any] = {"webhook": "Failed", "webhook_next_at": None, "message": why}
    if run.outcome == "Sending":
        update["outcome"] = "SendFailed"
    return run.model_copy(update=update)


def _drop_deliveries(state: RetrainingStatus | None, why: str, plan: RetrainPlan) -> None:
    """Every event still owed is not sent (the spec no longer names where to), each said once."""
    for index, run in enumerate(state.runs if state else []):
        if run.webhook == "Pending" and state is not None:
            state.runs[index] = _delivery_failed(run, why)
            plan.decisions.append(Decision("RetrainingWebhookFailed", f"Retraining run {run.run}: {why}", True))


def record_delivery(
    runs: list[dict[str, Any]], number: int, now: datetime, failure: str | None = None, final: bool = False
) -> tuple[list[dict[str, Any]], Decision | None]:
    """What one delivery of run ``number``'s CloudEvent did to the runs (status' wire form), and what to say.

    Accepted (``failure`` None): the run says Sent, or goes on Running its Job. Refused for now: sent again after
    a backoff. Refused for good (``final``: a 4xx) or out of deliveries: the webhook Failed, and a run with no Job
    ends SendFailed, its incident spent. A run no longer Pending (trimmed, or recorded meanwhile) is left alone.
    """
    parsed = [RetrainingRun.model_validate(raw) for raw in runs]
    index = next((i for i, run in enumerate(parsed) if run.run == number and run.webhook == "Pending"), None)
    if index is None:
        return runs, None
    run, attempts = parsed[index], parsed[index].webhook_attempts + 1
    if failure is None:
        outcome = "Sent" if run.outcome == "Sending" else run.outcome
        parsed[index] = run.model_copy(
            update={"webhook": "Accepted", "webhook_attempts": attempts, "webhook_next_at": None, "outcome": outcome}
        )
        said = Decision("RetrainingWebhookAccepted", f"Retraining run {number}: the webhook accepted its event")
    elif final or attempts >= WEBHOOK_DELIVERIES:
        why = f"{failure}; not sent again ({'refused for good' if final else f'{attempts} deliveries'})"
        parsed[index] = _delivery_failed(run.model_copy(update={"webhook_attempts": attempts}), why)
        said = Decision("RetrainingWebhookFailed", f"Retraining run {number}: {why}", warning=True)
    else:
        wait = min(WEBHOOK_FIRST_RETRY * 2 ** (attempts - 1), WEBHOOK_LAST_RETRY)
        again = format_time(now + wait)
        parsed[index] = run.model_copy(update={"webhook_attempts": attempts, "webhook_next_at": again})
        message = f"Retraining run {number}: delivery {attempts} of {WEBHOOK_DELIVERIES} failed ({failure}); sent again at {again}"
        said = Decision("RetrainingWebhookFailed", message, warning=True)
    return [run.to_wire() for run in parsed], said


def _cloud_event(ctx: RenderContext, run: RetrainingRun) -> dict[str, Any]:
    """A structured-mode CloudEvent (JSON) a CI system or pipeline engine can act on."""
    return {
        "specversion": "1.0",
        "type": "io.esteira.retraining.requested",
        "source": f"/namespaces/{ctx.namespace}/modeldeployments/{ctx.deployment}",
        "id": f"{ctx.namespace}.{ctx.deployment}.{run.run}",
        "time": run.at,
        "datacontenttype": "application/json",
        "data": {"run": run.run, "reason": run.reason, "evidence": run.evidence},
    }
