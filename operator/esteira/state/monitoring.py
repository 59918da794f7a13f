"""Drift monitoring of the stable revision: when to evaluate, and what one evaluation changes.

The window's verdict goes into `status.monitoring` and the `DataDrifted` condition. An incident starts when
the deployment first drifts and ends when a judged window is stable again: one Warning event per incident
(naming the top features), one Normal event when it clears. Too little data or missing metrics never start
or end an incident; they only say so in the status message.
"""

from __future__ import annotations

from datetime import datetime

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import (
    TOP_FEATURES,
    ConditionType,
    FeatureDrift,
    ModelDeploymentStatus,
    MonitoringStatus,
    QualityRate,
)
from esteira.drift.evaluate import DriftReport, DriftWindow, FeatureVerdict, evaluate
from esteira.drift.policy import policy_of
from esteira.state.conditions import set_condition
from esteira.vocabulary import Decision, parse_duration, parse_time

CONDITION: ConditionType = "DataDrifted"


def drift_due(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> int | None:
    """The revision to evaluate now (stable's), or None when monitoring is off or the interval has not passed."""
    drift = spec.monitoring.drift
    if drift is None or status.stable is None:
        return None
    last = status.monitoring.last_evaluation_time if status.monitoring else None
    if last is not None and now - parse_time(last) < parse_duration(drift.interval):
        return None
    return status.stable.revision


def seconds_to_next(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, now: datetime) -> float | None:
    drift = spec.monitoring.drift
    if drift is None or status.stable is None:
        return None
    last = status.monitoring.last_evaluation_time if status.monitoring else None
    if last is None:
        return 1.0
    return max(1.0, (parse_time(last) + parse_duration(drift.interval) - now).total_seconds())


def _feature(verdict: FeatureVerdict) -> FeatureDrift:
    return FeatureDrift(
        name=verdict.name,
        method=verdict.method,
        score=verdict.score,
        threshold=verdict.threshold,
        p_value=verdict.p_value,
        sample_size=verdict.sample_size,
        verdict=verdict.verdict,
    )


def _summary(report: DriftReport) -> str:
    judged = [f for f in report.features if f.verdict != "NoData"]
    top = ", ".join(f"{f.name} ({f.method} {f.score} > {f.threshold})" for f in report.drifted[:3])
    return f"{len(report.drifted)} of {len(judged)} features drifted over {report.sample_size} instances: {top}"


def monitor(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    now: str,
    generation: int | None,
    window: DriftWindow | None,
    error: str | None,
) -> list[Decision]:
    """Fold one evaluation (a window, or why there is none) into status; the events worth posting."""
    drift = spec.monitoring.drift
    if drift is None:
        status.monitoring = None
        status.conditions = [c for c in status.conditions if c.type != CONDITION]
        return []
    if window is None and error is None:
        return []  # not due
    previous = status.monitoring or MonitoringStatus()
    revision = status.stable.revision if status.stable else None
    if window is None:
        status.monitoring = previous.model_copy(
            update={"last_evaluation_time": now, "message": f"metrics unavailable: {error}"}
        )
        return []
    report = evaluate(window, policy_of(drift))
    quality = sorted(report.quality.items(), key=lambda item: -item[1])[:TOP_FEATURES]
    monitoring = MonitoringStatus(
        last_evaluation_time=now,
        revision=revision,
        window=drift.window,
        sample_size=report.sample_size,
        verdict=report.verdict,
        drifted_share=None if report.drifted_share is None else round(report.drifted_share, 4),
        features=[_feature(f) for f in report.features[:TOP_FEATURES]],
        predictions=_feature(report.prediction) if report.prediction else None,
        data_quality=[QualityRate(feature=f, kind=k, rate=r) for (f, k), r in quality],
        drifting_since=previous.drifting_since,
        clean_evaluations=previous.clean_evaluations,  # a window too small to judge neither clears nor resets
    )
    status.monitoring = monitoring
    decisions: list[Decision] = []
    if previous.revision is not None and previous.revision != revision and previous.drifting_since is not None:
        # A new stable revision, judged against its own reference profile: the last one's incident ends with it
        # (carried on, it held canaries on the old revision's evidence, and the new one's drift alerted nothing
        # and started no retraining, its incident already handled).
        decisions.append(Decision("DriftCleared", f"Revision {previous.revision} no longer serves: its drift ends"))
        monitoring.drifting_since, monitoring.clean_evaluations = None, 0
    alert = "Alert" in drift.actions
    if report.verdict == "Drifted":
        monitoring.message, monitoring.clean_evaluations = _summary(report), 0
        if monitoring.drifting_since is None:
            monitoring.drifting_since = now
            if alert:
                decisions.append(
                    Decision("DataDrifted", f"Revision {revision} inputs drift: {monitoring.message}", True)
                )
        set_condition(status, CONDITION, True, "InputsDrifted", monitoring.message, now, generation)
    elif report.verdict == "Stable":
        monitoring.message = f"no drift over {report.sample_size} instances"
        if monitoring.drifting_since is not None:
            monitoring.clean_evaluations = previous.clean_evaluations + 1
            if monitoring.clean_evaluations < drift.clear_after:  # the incident goes on until it stays clean
                monitoring.message += (
                    f" ({monitoring.clean_evaluations} of {drift.clear_after} evaluations in a row the incident "
                    "needs to end)"
                )
                set_condition(status, CONDITION, True, "InputsDrifted", monitoring.message, now, generation)
                return decisions
            decisions.append(Decision("DriftCleared", f"Revision {revision} inputs match the reference again"))
            monitoring.drifting_since, monitoring.clean_evaluations = None, 0
        set_condition(status, CONDITION, False, "NoDrift", monitoring.message, now, generation)
    else:
        monitoring.message = f"{report.sample_size} instances in the last {drift.window}, {drift.min_sample} needed"
        if monitoring.drifting_since is None:
            set_condition(status, CONDITION, False, "NotEnoughData", monitoring.message, now, generation)
    return decisions
