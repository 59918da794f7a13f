"""The retraining part of a reconcile: a drift incident in status triggers one Job, its outcome is recorded,
and a second trigger waits for minInterval."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import FeatureDrift, ModelDeploymentStatus, MonitoringStatus, RevisionRecord
from esteira.render import RenderContext
from esteira.state.retrain import plan_retraining
from tests.support.schemas import validate_kubernetes
from tests.support.specs import spec

CTX = RenderContext("iris", "models")
NOW = datetime(2026, 6, 1, 12, 0, 0)
JOB = {"template": {"spec": {"containers": [{"name": "train", "image": "example.com/train:1"}]}}}


def parsed(**retraining: Any) -> ModelDeploymentSpec:
    body = {"triggers": {"drift": True}, "job": JOB, "minInterval": "6h", **retraining}
    return ModelDeploymentSpec.parse(spec(retraining=body))


def drifting(since: str = "2026-06-01T11:00:00Z") -> ModelDeploymentStatus:
    feature = FeatureDrift(
        name="petal_length", method="JensenShannon", score=0.3, threshold=0.1, sample_size=500, verdict="Drift"
    )
    monitoring = MonitoringStatus(
        verdict="Drifted", drifting_since=since, features=[feature], sample_size=500, window="1h"
    )
    return ModelDeploymentStatus(monitoring=monitoring)


def complete(job: dict[str, Any], kind: str = "Complete") -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": "CompletionsReached"}  # Kubernetes 1.31+ says why
    return {**job, "status": {"conditions": [condition]}}


def test_a_drift_incident_starts_one_job_with_its_evidence() -> None:
    status = drifting()
    plan = plan_retraining(CTX, parsed(), status, {}, NOW, labelled_data="http://collector/v1/export?deployment=iris")
    (job,) = plan.jobs
    validate_kubernetes(job)
    assert job["metadata"]["name"] == "iris-retrain-1"
    assert [d.reason for d in plan.decisions] == ["RetrainingTriggered"]
    assert status.retraining is not None
    (run,) = status.retraining.runs
    assert (run.outcome, run.job, run.signal) == ("Running", "iris-retrain-1", "Drift")
    assert run.evidence["features"]["petal_length"]["score"] == 0.3
    assert run.evidence["labelledData"].startswith("http://collector")
    assert "stable" not in run.evidence  # no stable revision recorded yet: nothing to beat
    again = plan_retraining(CTX, parsed(), status, {"iris-retrain-1": job}, NOW + timedelta(minutes=1))
    assert again.jobs == [] and again.decisions == []  # same incident, and a run is going


def test_the_job_outcome_is_recorded_once() -> None:
    status = drifting()
    (job,) = plan_retraining(CTX, parsed(), status, {}, NOW).jobs
    done = plan_retraining(CTX, parsed(), status, {"iris-retrain-1": complete(job)}, NOW + timedelta(minutes=5))
    assert [d.message for d in done.decisions] == ["Retraining run 1 (iris-retrain-1) succeeded"]
    assert status.retraining is not None and status.retraining.runs[0].outcome == "Succeeded"
    assert status.retraining.runs[0].message == "", "the trigger's reason is what a success reads as"
    later = plan_retraining(CTX, parsed(), status, {"iris-retrain-1": complete(job)}, NOW + timedelta(minutes=6))
    assert later.decisions == []


def test_a_failed_job_says_why() -> None:
    status = drifting()
    (job,) = plan_retraining(CTX, parsed(), status, {}, NOW).jobs
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
    failed["message"] = "Job was active longer than specified deadline"
    done = plan_retraining(CTX, parsed(), status, {"iris-retrain-1": {**job, "status": {"conditions": [failed]}}}, NOW)
    (said,) = done.decisions
    assert said.reason == "RetrainingFailed" and said.warning and "DeadlineExceeded: Job was active" in said.message
    assert status.retraining is not None and status.retraining.runs[0].message.startswith("DeadlineExceeded")


def test_a_new_incident_waits_for_min_interval() -> None:
    status = drifting()
    (job,) = plan_retraining(CTX, parsed(), status, {}, NOW).jobs
    plan_retraining(CTX, parsed(), status, {"iris-retrain-1": complete(job, "Failed")}, NOW + timedelta(minutes=5))
    status.monitoring = drifting("2026-06-01T13:00:00Z").monitoring
    early = plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(hours=2))
    assert early.jobs == []
    late = plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(hours=7))
    assert [j["metadata"]["name"] for j in late.jobs] == ["iris-retrain-2"]


def test_webhook_gets_a_cloud_event() -> None:
    status = drifting()
    plan = plan_retraining(CTX, parsed(job=None, webhook="https://ci.example.com/hooks/retrain"), status, {}, NOW)
    (event,) = plan.webhook_events
    assert event["specversion"] == "1.0" and event["type"] == "io.esteira.retraining.requested"
    assert event["data"]["evidence"]["signal"] == "Drift"
    assert status.retraining is not None and status.retraining.runs[0].outcome == "Sending"


def test_a_command_runs_only_where_commands_can_run_and_elsewhere_the_incident_says_so_once() -> None:
    body = parsed(job=None, command=["python", "train.py"])
    status = drifting()
    said = plan_retraining(CTX, body, status, {}, NOW).decisions
    assert [(d.reason, d.warning) for d in said] == [("RetrainingNotRun", True)] and "a cluster runs" in said[0].message
    assert status.retraining is not None and status.retraining.runs == []
    assert plan_retraining(CTX, body, status, {}, NOW).decisions == [], "once an incident"
    plan = plan_retraining(CTX, body, drifting(), {}, NOW, runs_commands=True)
    assert [r.job for r in plan.commands] == ["command-1"]
    jobs_only = drifting()  # esteira up: a Job's run, never made there, would have been Running for ever
    said = plan_retraining(CTX, parsed(), jobs_only, {}, NOW, runs_commands=True).decisions
    assert [d.reason for d in said] == ["RetrainingNotRun"] and jobs_only.retraining is not None
    assert jobs_only.retraining.runs == []


def test_no_retraining_spec_plans_nothing() -> None:
    status = drifting()
    assert plan_retraining(CTX, ModelDeploymentSpec.parse(spec()), status, {}, NOW).decisions == []
    assert status.retraining is None


def test_a_job_lost_between_the_status_write_and_its_creation_is_created_again() -> None:
    status = drifting()
    (job,) = plan_retraining(CTX, parsed(), status, {}, NOW).jobs
    again = plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(seconds=5))  # the Job never appeared
    assert again.jobs == [job]
    assert again.decisions == []


def test_a_job_deleted_before_its_outcome_was_read_is_not_run_again() -> None:
    """By hand (to cancel it) or by a ttlSecondsAfterFinished shorter than the operator's next look: made again, the
    retraining ran a second time, and a Job deleted to stop it came back."""
    status = drifting()
    (job,) = plan_retraining(CTX, parsed(), status, {}, NOW).jobs
    seen = plan_retraining(CTX, parsed(), status, {"iris-retrain-1": job}, NOW + timedelta(minutes=1))
    assert seen.jobs == [] and seen.decisions == []
    gone = plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(minutes=2))
    assert gone.jobs == []
    assert [(d.reason, d.warning) for d in gone.decisions] == [("RetrainingFailed", True)]
    assert status.retraining is not None
    (run,) = status.retraining.runs
    assert run.outcome == "Failed" and "deleted before its outcome was read" in run.message
    assert plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(minutes=3)).decisions == []


def test_the_evidence_names_the_stable_build_a_candidate_must_beat() -> None:
    status = drifting()
    status.stable = RevisionRecord(revision=3, model_version="1.1.0", storage_uri="s3://models/iris/1.1.0", since="x")
    plan_retraining(CTX, parsed(), status, {}, NOW)
    assert status.retraining is not None
    assert status.retraining.runs[0].evidence["stable"] == {"version": "1.1.0", "storageUri": "s3://models/iris/1.1.0"}


STABLE = RevisionRecord(
    revision=3, model_version="1.0.0", storage_uri="s3://models/iris/1.0.0", since="2026-06-01T10:00:00Z"
)


def test_stable_accuracy_below_accuracy_below_starts_one_run_a_revision() -> None:
    """triggers.accuracyBelow was accepted and never started a run: nothing made its signal."""
    from esteira.quality.scores import Tally

    spec_ = parsed(triggers={"accuracyBelow": 0.9, "accuracyWindow": "30m"})
    status = ModelDeploymentStatus(stable=STABLE)
    assert plan_retraining(CTX, spec_, status, {}, NOW, stable_accuracy=Tally(99, 10)).jobs == []  # too few labels
    assert plan_retraining(CTX, spec_, status, {}, NOW, stable_accuracy=Tally(200, 190)).jobs == []  # 0.95: fine
    assert plan_retraining(CTX, spec_, status, {}, NOW).jobs == []  # not read: no incident made of nothing
    plan = plan_retraining(CTX, spec_, status, {}, NOW, stable_accuracy=Tally(200, 160))
    (job,) = plan.jobs
    assert status.retraining is not None
    (run,) = status.retraining.runs
    assert (run.signal, run.reason) == ("Accuracy", "stable revision 3's labelled accuracy 0.800 is below 0.9")
    assert run.evidence["accuracy"] == 0.8 and run.evidence["labelled"] == 200 and run.evidence["window"] == "30m"
    later = plan_retraining(
        CTX, spec_, status, {"iris-retrain-1": complete(job)}, NOW + timedelta(hours=7), stable_accuracy=Tally(200, 150)
    )
    assert later.jobs == []  # the same revision's incident: handled


def test_a_data_quality_incident_starts_one_run_a_revision() -> None:
    """triggers.dataQuality was accepted and never started a run: nothing made its signal."""
    from esteira.api.status import QualityRate

    spec_ = parsed(triggers={"dataQuality": True})
    low = MonitoringStatus(
        revision=3, window="1h", data_quality=[QualityRate(feature="petal_length", kind="missing", rate=0.01)]
    )
    assert plan_retraining(CTX, spec_, ModelDeploymentStatus(stable=STABLE, monitoring=low), {}, NOW).jobs == []
    high = low.model_copy(update={"data_quality": [QualityRate(feature="petal_length", kind="missing", rate=0.2)]})
    status = ModelDeploymentStatus(stable=STABLE, monitoring=high)
    assert len(plan_retraining(CTX, spec_, status, {}, NOW).jobs) == 1
    assert status.retraining is not None
    (run,) = status.retraining.runs
    assert (run.signal, run.reason) == ("DataQuality", "data quality: petal_length missing 20%")
    assert run.evidence["violations"] == [{"feature": "petal_length", "kind": "missing", "rate": 0.2}]
    parsed_drift_only = parsed()  # drift alone does not count a data-quality incident
    assert (
        plan_retraining(CTX, parsed_drift_only, ModelDeploymentStatus(stable=STABLE, monitoring=high), {}, NOW).jobs
        == []
    )
