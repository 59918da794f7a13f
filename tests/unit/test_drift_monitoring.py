"""Drift monitoring in the operator's pure core: the spec's rules, one incident one event, the canary held
by BlockRollouts, and the canary's data-drift check on binned evidence."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from esteira.api.errors import InvalidSpec
from esteira.api.spec import DataDriftCheck, ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus, RetrainingStatus, RevisionRecord
from esteira.drift.evaluate import DriftPolicy, DriftWindow, evaluate
from esteira.drift.policy import policy_of
from esteira.rollout.checks import data_drift_check
from esteira.rollout.cycle import rollout_step
from esteira.rollout.evidence import ArmSample, Evidence
from esteira.rollout.inputs import ObservedRoute, RolloutInput
from esteira.rollout.revisions import track_revisions
from esteira.state.conditions import get_condition
from esteira.state.monitoring import drift_due, monitor
from esteira.vocabulary import format_time
from tests.support.specs import model, spec

T0 = datetime(2026, 1, 1, 12, 0, 0)
REFERENCE = {"0.5": 250.0, "1": 250.0, "1.5": 250.0, "+Inf": 250.0}
STABLE_WINDOW = {"0.5": 240.0, "1": 260.0, "1.5": 255.0, "+Inf": 245.0}
SHIFTED_WINDOW = {"0.5": 20.0, "1": 60.0, "1.5": 220.0, "+Inf": 700.0}


def window(current: dict[str, float], features: int = 3) -> DriftWindow:
    names = [f"f{i}" for i in range(features)]
    return DriftWindow(
        reference={n: REFERENCE for n in names},
        current={n: current for n in names},
        instances=sum(current.values()),
    )


def parsed(drift: dict[str, Any] | None = None, version: str = "1", **extra: Any) -> ModelDeploymentSpec:
    monitoring = {"drift": drift} if drift is not None else {}
    return ModelDeploymentSpec.parse(
        spec(model=model(version=version, storageUri=f"s3://m/{version}"), monitoring=monitoring, **extra)
    )


def stable_status() -> ModelDeploymentStatus:
    record = RevisionRecord(revision=1, model_version="1", storage_uri="s3://m/1", since="2026-01-01T11:00:00Z")
    return ModelDeploymentStatus(stable=record, latest_revision=1)


def test_retrain_needs_somewhere_to_hand_the_incident() -> None:
    with pytest.raises(
        InvalidSpec, match=r"monitoring\.drift\.actions: Retrain hands the incident to spec\.retraining"
    ):
        parsed({"actions": ["Alert", "Retrain"]})
    with pytest.raises(InvalidSpec, match="each feature may be named once"):
        parsed({"features": [{"name": "a"}, {"name": "a", "threshold": 0.3}]})
    assert parsed({"actions": ["Alert", "BlockRollouts"]}).monitoring.drift is not None


def test_one_incident_gives_one_warning_and_clearing_gives_one_normal_event() -> None:
    md, status = parsed({}), stable_status()
    now = format_time(T0)
    first = monitor(md, status, now, 1, window(SHIFTED_WINDOW), None)
    assert [(d.reason, d.warning) for d in first] == [("DataDrifted", True)]
    assert "f0" in first[0].message and status.monitoring is not None
    assert status.monitoring.verdict == "Drifted" and status.monitoring.drifting_since == now
    condition = get_condition(status, "DataDrifted")
    assert condition is not None and condition.status == "True"
    assert monitor(md, status, format_time(T0 + timedelta(minutes=1)), 1, window(SHIFTED_WINDOW), None) == []
    # too little data and missing metrics neither end nor restart the incident
    assert monitor(md, status, now, 1, window({"0.5": 3.0}), None) == []
    assert monitor(md, status, now, 1, None, "Prometheus down") == []
    assert status.monitoring.drifting_since == now and "Prometheus down" in status.monitoring.message
    for clean in (1, 2):  # clearAfter (3) evaluations in a row without drift end it
        assert monitor(md, status, now, 1, window(STABLE_WINDOW), None) == []
        assert status.monitoring.drifting_since == now and f"{clean} of 3 evaluations" in status.monitoring.message
        condition = get_condition(status, "DataDrifted")
        assert condition is not None and condition.status == "True"
    cleared = monitor(md, status, now, 1, window(STABLE_WINDOW), None)
    assert [d.reason for d in cleared] == ["DriftCleared"]
    condition = get_condition(status, "DataDrifted")
    assert condition is not None and condition.status == "False" and condition.reason == "NoDrift"


def test_a_score_wavering_about_its_threshold_is_one_incident() -> None:
    """Clean, drifted, clean, drifted ...: cleared at the first clean evaluation, each return of drift was a new
    incident, with its own Warning, retraining run and hold."""
    md, status = parsed({"clearAfter": 2}), stable_status()
    said = []
    for minute, current in enumerate([SHIFTED_WINDOW, STABLE_WINDOW] * 4):
        said += monitor(md, status, format_time(T0 + timedelta(minutes=minute)), 1, window(current), None)
    assert [d.reason for d in said] == ["DataDrifted"]
    assert status.monitoring is not None and status.monitoring.drifting_since == format_time(T0)
    said = [
        monitor(md, status, format_time(T0 + timedelta(minutes=9 + i)), 1, window(STABLE_WINDOW), None)
        for i in range(2)
    ]
    assert [d.reason for out in said for d in out] == ["DriftCleared"]


def test_a_new_stable_revision_starts_its_own_incident() -> None:
    """Revision 1's incident carried on under revision 2: too little of 2's traffic kept DataDrifted and
    BlockRollouts on 1's evidence, and 2's own drift posted no Warning and started no retraining (its incident,
    named by 1's start, already handled)."""
    md, status = parsed({}), stable_status()
    first = format_time(T0)
    monitor(md, status, first, 1, window(SHIFTED_WINDOW), None)
    assert status.monitoring is not None and status.monitoring.drifting_since == first
    status.stable = RevisionRecord(revision=2, model_version="2", storage_uri="s3://m/2", since=first)
    later = format_time(T0 + timedelta(hours=1))
    ended = monitor(md, status, later, 1, window({"0.5": 3.0}), None)  # too little of revision 2's traffic
    assert [d.reason for d in ended] == ["DriftCleared"] and "Revision 1" in ended[0].message
    assert status.monitoring is not None and status.monitoring.drifting_since is None
    condition = get_condition(status, "DataDrifted")
    assert condition is not None and condition.status == "False"
    drifting = monitor(md, status, format_time(T0 + timedelta(hours=2)), 1, window(SHIFTED_WINDOW), None)
    assert [(d.reason, d.warning) for d in drifting] == [("DataDrifted", True)]
    assert "Revision 2" in drifting[0].message and status.monitoring.drifting_since != first


def test_low_unshifted_traffic_raises_nothing() -> None:
    md, status = parsed({"minSample": 100}), stable_status()
    assert monitor(md, status, format_time(T0), 1, window({"0.5": 10.0, "1": 12.0, "1.5": 9.0}), None) == []
    assert status.monitoring is not None and status.monitoring.verdict == "NoData"
    condition = get_condition(status, "DataDrifted")
    assert condition is not None and (condition.status, condition.reason) == ("False", "NotEnoughData")


def test_alert_can_be_left_out_and_monitoring_off_clears_the_status() -> None:
    status = stable_status()
    assert (
        monitor(parsed({"actions": ["BlockRollouts"]}), status, format_time(T0), 1, window(SHIFTED_WINDOW), None) == []
    )
    assert status.monitoring is not None and status.monitoring.drifting_since is not None
    monitor(parsed(None), status, format_time(T0), 1, None, None)
    assert status.monitoring is None and get_condition(status, "DataDrifted") is None


def test_evaluations_are_due_once_per_interval() -> None:
    md, status = parsed({"interval": "5m"}), stable_status()
    assert drift_due(md, status, T0) == 1
    monitor(md, status, format_time(T0), 1, window(STABLE_WINDOW), None)
    assert drift_due(md, status, T0 + timedelta(minutes=4)) is None
    assert drift_due(md, status, T0 + timedelta(minutes=5)) == 1
    assert drift_due(parsed(None), status, T0) is None


def canary_at_its_first_step_while_inputs_drift(
    actions: list[str],
) -> tuple[ModelDeploymentSpec, ModelDeploymentStatus]:
    """Revision 2 a canary at 10% (threshold 2, one request enough), stable's inputs drifting since T0."""
    rollout = {"steps": [10, 100], "interval": "1m", "threshold": 2, "analysis": {"minRequests": 1}}
    md = parsed({"actions": actions}, version="2", rollout=rollout)
    status = track_revisions(
        parsed(version="1", rollout=rollout), ModelDeploymentStatus(), "2026-01-01T11:00:00Z"
    ).status
    status = track_revisions(md, status, format_time(T0)).status
    status = rollout_step(RolloutInput(spec=md, status=status, now=T0, route=ObservedRoute(2, True, 0))).status
    monitor(md, status, format_time(T0), 1, window(SHIFTED_WINDOW), None)
    return md, status


def test_block_rollouts_holds_the_canary_while_inputs_drift_and_lets_it_go_after() -> None:
    md, status = canary_at_its_first_step_while_inputs_drift(["Alert", "BlockRollouts"])
    route = ObservedRoute(2, True, 10)
    good = Evidence(canary=ArmSample(requests=100), stable=ArmSample(requests=900))
    later = T0 + timedelta(minutes=2)
    held = rollout_step(RolloutInput(spec=md, status=status, now=later, route=route, evidence=good))
    assert held.status.canary is not None and held.status.canary.hold == "InputsDrifting"
    assert held.status.canary.weight == 10
    assert [d.reason for d in held.decisions] == ["RolloutBlocked"]
    again = rollout_step(RolloutInput(spec=md, status=held.status, now=later, route=route, evidence=good))
    assert again.decisions == []  # one incident, one event
    status = again.status
    for _ in range(3):  # clearAfter
        monitor(md, status, format_time(later), 1, window(STABLE_WINDOW), None)
    freed = rollout_step(
        RolloutInput(spec=md, status=status, now=later + timedelta(minutes=1), route=route, evidence=good)
    )
    assert freed.status.canary is None or freed.status.canary.hold != "InputsDrifting"
    assert "AnalysisPassed" in [d.reason for d in freed.decisions]


def test_a_build_retrained_since_the_incident_began_is_not_held_by_it() -> None:
    """It is the answer to the incident: held, stable's inputs kept drifting from stable's reference, and the
    hold never ended. A build from a run begun before the incident is held as any other."""
    route = ObservedRoute(2, True, 10)
    good = Evidence(canary=ArmSample(requests=100), stable=ArmSample(requests=900))
    outcomes = {}
    for started in (T0 + timedelta(seconds=30), T0 - timedelta(hours=1)):
        md, status = canary_at_its_first_step_while_inputs_drift(["BlockRollouts"])
        run = {"run": 1, "at": format_time(started), "signal": "Drift", "reason": "drift", "outcome": "Proposed"}
        status.retraining = RetrainingStatus.model_validate({"runs": [{**run, "version": "2"}], "nextRun": 2})
        later = T0 + timedelta(minutes=2)
        out = rollout_step(RolloutInput(spec=md, status=status, now=later, route=route, evidence=good))
        assert out.status.canary is not None
        outcomes[started < T0] = (out.status.canary.hold, [d.reason for d in out.decisions])
    assert outcomes[False][0] != "InputsDrifting" and "AnalysisPassed" in outcomes[False][1]
    assert outcomes[True] == ("InputsDrifting", ["RolloutBlocked"])


def test_a_canary_held_while_inputs_drift_is_still_rolled_back_when_it_fails_its_checks() -> None:
    """BlockRollouts moves no canary on, but one erroring at its weight is judged and rolled back at the threshold:
    held without a verdict, it kept its share of traffic for as long as the inputs drifted."""
    md, status = canary_at_its_first_step_while_inputs_drift(["BlockRollouts"])
    route = ObservedRoute(2, True, 10)
    failing = Evidence(canary=ArmSample(requests=100, errors=40), stable=ArmSample(requests=900))
    reasons: list[str] = []
    for minutes in (1, 2, 3):
        out = rollout_step(
            RolloutInput(spec=md, status=status, now=T0 + timedelta(minutes=minutes), route=route, evidence=failing)
        )
        status = out.status
        reasons += [d.reason for d in out.decisions]
        if status.canary is not None:
            assert status.canary.weight == 10 and status.canary.hold == "InputsDrifting"
    assert reasons == ["RolloutBlocked", "AnalysisFailed", "RolledBack"], reasons
    assert status.canary is None and status.last_rollout is not None and status.last_rollout.outcome == "RolledBack"


def test_a_pass_while_inputs_drift_resets_the_count_of_failures_in_a_row() -> None:
    md, status = canary_at_its_first_step_while_inputs_drift(["BlockRollouts"])
    failing = Evidence(canary=ArmSample(requests=100, errors=40), stable=ArmSample(requests=900))
    good = Evidence(canary=ArmSample(requests=100), stable=ArmSample(requests=900))
    for minutes, evidence in enumerate((failing, good, failing), start=1):
        now = T0 + timedelta(minutes=minutes)
        status = rollout_step(
            RolloutInput(spec=md, status=status, now=now, route=ObservedRoute(2, True, 10), evidence=evidence)
        ).status
    assert status.canary is not None and status.canary.failed_checks == 1 and status.canary.weight == 10


def test_the_canary_data_drift_check_says_no_data_only_on_too_little_data() -> None:
    check, policy = DataDriftCheck(max=0.2), DriftPolicy(min_sample=100)
    assert data_drift_check(check, window({"0.5": 5.0, "1": 5.0}), policy).verdict == "NoData"
    assert data_drift_check(check, None, policy).verdict == "NoData"
    failed = data_drift_check(check, window(SHIFTED_WINDOW), policy)
    assert (failed.verdict, failed.value, failed.sample_size) == ("Fail", 1.0, 1000)
    assert "f0" in failed.message
    passed = data_drift_check(check, window(STABLE_WINDOW), policy)
    assert (passed.verdict, passed.value) == ("Pass", 0.0)


def test_a_feature_s_override_applies_by_the_name_its_series_carry() -> None:
    """The server counts `petal length` as `petal_length` (its metric line cannot carry the space): an override
    by the name the model's input has was looked up under the other and never applied."""
    current = DriftWindow(
        reference={"petal_length": REFERENCE}, current={"petal_length": SHIFTED_WINDOW}, instances=1000
    )
    lenient = policy_of(parsed({"features": [{"name": "petal length", "threshold": 5.0}]}).monitoring.drift)
    assert evaluate(current, lenient).features[0].verdict == "NoDrift"
    assert evaluate(current, policy_of(parsed({}).monitoring.drift)).features[0].verdict == "Drift"
