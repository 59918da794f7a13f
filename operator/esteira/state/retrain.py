"""The retraining part of a reconcile, planned without I/O: signals from status, a trigger, a Job or a
webhook call to make, and what finished Jobs say.

Signals come from what the operator already wrote into status (a drift incident in status.monitoring)
and from the clock; the trigger rules (one per incident, minInterval, one run at a time) are
`esteira.retraining.trigger`'s. A Job's outcome is read from its status conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from esteira.api.spec import ModelDeploymentSpec, Retraining
from esteira.api.status import RUNS_KEPT, ModelDeploymentStatus, RetrainingRun, RetrainingStatus
from esteira.render.inferenceservice import RenderContext
from esteira.render.job import render_retrain_job, retrain_job_name
from esteira.retraining.trigger import History, Policy, Signal, SignalKind, decide
from esteira.vocabulary import Decision, format_time

HANDLED_KEPT = 50


@dataclass
class RetrainPlan:
    """What to do for retraining this reconcile (status is updated in place)."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    webhook_events: list[dict[str, Any]] = field(default_factory=list)  # CloudEvents to POST to spec's webhook
    commands: list[RetrainingRun] = field(default_factory=list)  # runs `esteira up` starts as a command
    decisions: list[Decision] = field(default_factory=list)


def signals_from_status(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> list[Signal]:
    """The incidents status records right now, as trigger signals carrying their evidence."""
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
    return found


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


def _job_outcome(job: dict[str, Any]) -> str | None:
    """Succeeded or Failed once the Job controller says so (its Complete/Failed conditions), else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if condition.get("status") == "True" and condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return None


def plan_retraining(
    ctx: RenderContext,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    jobs: Mapping[str, dict[str, Any]],
    now: datetime,
    labelled_data: str | None = None,
    extra_signals: list[Signal] | None = None,
    runs_commands: bool = False,
) -> RetrainPlan:
    """Record finished runs, then maybe trigger a new one. `jobs`: this deployment's retraining Jobs by name.

    `runs_commands`: whether this runtime can run `retraining.command` (`esteira up` can; a cluster runs
    the Job template and calls the webhook instead).
    """
    plan = RetrainPlan()
    retraining = spec.retraining
    if retraining is None or not (retraining.job is not None or retraining.webhook or runs_commands):
        return plan
    state = status.retraining = status.retraining or RetrainingStatus()
    for index, run in enumerate(state.runs):
        if run.outcome != "Running" or run.job is None or run.job not in jobs:
            continue
        outcome = _job_outcome(jobs[run.job])
        if outcome is not None:
            state.runs[index] = run.model_copy(update={"outcome": outcome})
            plan.decisions.append(
                Decision(
                    f"Retraining{outcome}",
                    f"Retraining run {run.run} ({run.job}) {outcome.lower()}",
                    outcome == "Failed",
                )
            )
    for run in state.runs:
        # A run recorded before its Job was created (the status is written first): create it now.
        if (
            run.outcome == "Running"
            and retraining.job is not None
            and run.job == retrain_job_name(ctx.deployment, run.run)
            and run.job not in jobs
        ):
            plan.jobs.append(render_retrain_job(ctx, retraining.job, run.run, run.reason, run.evidence))
    running = next((r.job or str(r.run) for r in state.runs if r.outcome == "Running"), None)
    history = History(frozenset(state.handled), state.last_triggered_at, running)
    signals = signals_from_status(spec, status) + (extra_signals or [])
    verdict = decide(_policy(spec, retraining), history, signals, now)
    if not verdict.fire or verdict.signal is None:
        return plan
    signal, at, number = verdict.signal, format_time(now), state.next_run
    evidence = {"signal": signal.kind, "incident": signal.incident, **signal.evidence}
    if labelled_data:
        evidence["labelledData"] = labelled_data
    if status.stable is not None:  # what a candidate must beat: a run can score it on its own held-out rows
        evidence["stable"] = {"version": status.stable.model_version, "storageUri": status.stable.storage_uri}
    run = RetrainingRun(run=number, at=at, signal=signal.kind, reason=signal.summary, evidence=evidence, outcome="Sent")
    if retraining.job is not None:
        job = render_retrain_job(ctx, retraining.job, number, signal.summary, evidence)
        plan.jobs.append(job)
        run = run.model_copy(update={"outcome": "Running", "job": retrain_job_name(ctx.deployment, number)})
    if retraining.webhook is not None:
        plan.webhook_events.append(_cloud_event(ctx, run))
    if retraining.command and runs_commands:
        run = run.model_copy(update={"outcome": "Running", "job": f"command-{number}"})
        plan.commands.append(run)
    state.runs = [run, *state.runs][:RUNS_KEPT]
    state.handled = [signal.incident, *state.handled][:HANDLED_KEPT]
    state.last_triggered_at, state.next_run = at, number + 1
    plan.decisions.append(Decision("RetrainingTriggered", f"Retraining run {number}: {signal.summary}"))
    return plan


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
