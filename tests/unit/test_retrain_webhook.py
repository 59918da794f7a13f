"""A retraining run's CloudEvent reaches its webhook: sent again with backoff while the webhook cannot take it,
sent once more after a restart that recorded it unsent, and given up (the run SendFailed) when refused for good
or out of deliveries."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus, RetrainingRun, RevisionRecord
from esteira.controller import webhooks
from esteira.controller.reconciler import Reconciler
from esteira.controller.retry import ApiError
from esteira.rollout.revisions import track_revisions
from esteira.state.reconcile import ReconcilePlan
from esteira.state.retrain import WEBHOOK_DELIVERIES, plan_retraining, record_delivery
from esteira.vocabulary import parse_time
from tests.support.cloudevents_sink import Post, sink
from tests.support.specs import model, spec
from tests.unit.test_retrain_plan import CTX, JOB, NOW, drifting, parsed

HOOK = "https://ci.example.com/hooks/retrain"
MD = {"apiVersion": "serving.esteira.io/v1alpha1", "kind": "ModelDeployment"}
MD |= {"metadata": {"name": "iris", "namespace": "models", "uid": "uid-iris"}}


RETRAIN = {"triggers": {"drift": True}, "webhook": HOOK, "minInterval": "6h"}


def hooked(**retraining: Any) -> ModelDeploymentSpec:
    return parsed(**{"job": None, "webhook": HOOK, **retraining})


def triggered(spec: ModelDeploymentSpec) -> tuple[ModelDeploymentStatus, dict[str, Any]]:
    status = drifting()
    (event,) = plan_retraining(CTX, spec, status, {}, NOW).webhook_events
    return status, event


def runs_of(status: ModelDeploymentStatus) -> list[dict[str, Any]]:
    assert status.retraining is not None
    return [run.to_wire() for run in status.retraining.runs]


def test_a_trigger_owes_its_event_until_the_webhook_accepts_it_and_holds_the_next_trigger() -> None:
    status, event = triggered(hooked())
    (run,) = status.retraining.runs if status.retraining else []
    assert (run.outcome, run.webhook, run.webhook_attempts) == ("Sending", "Pending", 0)
    status.monitoring = drifting("2026-06-01T13:00:00Z").monitoring  # a new incident, minInterval long past
    later = plan_retraining(CTX, hooked(), status, {}, NOW + timedelta(hours=7))
    assert [e["id"] for e in later.webhook_events] == [event["id"]], "the event owed, no new run"
    assert [d.reason for d in later.decisions] == []


def test_deliveries_back_off_then_give_up_and_the_run_ends_send_failed() -> None:
    status, event = triggered(hooked())
    runs, now, waits = runs_of(status), NOW, []
    for attempt in range(1, WEBHOOK_DELIVERIES):
        runs, said = record_delivery(runs, 1, now, "HTTP 503: busy")
        assert said is not None and said.warning and f"delivery {attempt} of {WEBHOOK_DELIVERIES}" in said.message
        again = parse_time(runs[0]["webhookNextAt"])
        waits.append((again - now).total_seconds())
        status.retraining.runs = [RetrainingRun.model_validate(r) for r in runs]  # type: ignore[union-attr]
        early = plan_retraining(CTX, hooked(), status, {}, again - timedelta(seconds=1))
        assert early.webhook_events == [], "not before its backoff"
        (due,) = plan_retraining(CTX, hooked(), status, {}, again).webhook_events
        assert due == event, "the same event, with the same id, for the receiver to drop a repeat"
        now = again
    assert waits == [60, 120, 240, 480, 960, 1800, 1800][: WEBHOOK_DELIVERIES - 1]
    runs, said = record_delivery(runs, 1, now, "HTTP 503: busy")
    assert said is not None and said.warning and "not sent again" in said.message
    assert (runs[0]["outcome"], runs[0]["webhook"]) == ("SendFailed", "Failed") and "webhookNextAt" not in runs[0]
    assert record_delivery(runs, 1, now, "HTTP 503: busy") == (runs, None), "a run no longer owed is left alone"


def test_a_refusal_for_good_ends_the_run_at_once_and_an_acceptance_says_sent() -> None:
    status, _ = triggered(hooked())
    refused, said = record_delivery(runs_of(status), 1, NOW, "HTTP 400: bad event", final=True)
    assert refused[0]["outcome"] == "SendFailed" and "refused for good" in refused[0]["message"]
    assert said is not None and said.reason == "RetrainingWebhookFailed"
    accepted, said = record_delivery(runs_of(status), 1, NOW)
    assert (accepted[0]["outcome"], accepted[0]["webhook"]) == ("Sent", "Accepted")
    assert said is not None and (said.reason, said.warning) == ("RetrainingWebhookAccepted", False)


def test_a_job_s_run_goes_on_running_when_its_webhook_gives_up() -> None:
    status, _ = triggered(hooked(job=JOB))
    runs, _ = record_delivery(runs_of(status), 1, NOW, "HTTP 404: no such hook", final=True)
    assert (runs[0]["outcome"], runs[0]["webhook"], runs[0]["job"]) == ("Running", "Failed", "iris-retrain-1")


def test_a_webhook_removed_from_the_spec_is_not_owed_any_more() -> None:
    status, _ = triggered(hooked())
    plan = plan_retraining(CTX, parsed(), status, {}, NOW + timedelta(minutes=1))  # the job only, now
    assert plan.webhook_events == [] and [d.reason for d in plan.decisions] == ["RetrainingWebhookFailed"]
    assert runs_of(status)[0]["outcome"] == "SendFailed"


def test_retraining_removed_from_the_spec_owes_nothing_either() -> None:
    """Left Sending, a later spec with retraining back sent weeks-old evidence at once."""
    status, _ = triggered(hooked())
    without = ModelDeploymentSpec.parse(spec())
    plan = plan_retraining(CTX, without, status, {}, NOW + timedelta(minutes=1))
    assert [(d.reason, d.warning) for d in plan.decisions] == [("RetrainingWebhookFailed", True)]
    assert (runs_of(status)[0]["outcome"], runs_of(status)[0]["webhook"]) == ("SendFailed", "Failed")
    back = plan_retraining(CTX, hooked(), status, {}, NOW + timedelta(days=20))
    assert back.webhook_events == []


def test_a_job_s_finished_run_that_still_owes_its_event_holds_the_next_trigger() -> None:
    status, _ = triggered(hooked(job=JOB))
    job = {"metadata": {"name": "iris-retrain-1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    plan_retraining(CTX, hooked(job=JOB), status, {"iris-retrain-1": job}, NOW + timedelta(minutes=5))
    assert runs_of(status)[0]["outcome"] == "Succeeded" and runs_of(status)[0]["webhook"] == "Pending"
    status.monitoring = drifting("2026-06-01T13:00:00Z").monitoring
    later = plan_retraining(CTX, hooked(job=JOB), status, {"iris-retrain-1": job}, NOW + timedelta(hours=7))
    assert later.jobs == [] and "RetrainingTriggered" not in [d.reason for d in later.decisions]


def test_a_person_s_own_build_is_not_credited_to_a_run_whose_event_nobody_received() -> None:
    status, _ = triggered(hooked())
    status.stable = RevisionRecord(revision=1, model_version="1", storage_uri="s3://m/1", since="x")
    status.latest_revision = 1
    by_hand = ModelDeploymentSpec.parse(spec(model=model(version="2", storageUri="s3://m/2"), retraining=RETRAIN))
    after = track_revisions(by_hand, status, "2026-06-01T12:05:00Z").status
    (run,) = runs_of(after)
    assert (run["outcome"], run["webhook"], run.get("version")) == ("Sending", "Pending", None)


def test_esteira_up_owes_no_webhook() -> None:
    status = drifting()
    plan = plan_retraining(CTX, hooked(command=["train"]), status, {}, NOW, runs_commands=True)
    assert plan.webhook_events == [] and runs_of(status)[0].get("webhook") is None
    owed, _ = triggered(hooked(command=["train"]))  # recorded in a cluster, read by esteira up
    assert plan_retraining(CTX, hooked(command=["train"]), owed, {}, NOW, runs_commands=True).webhook_events == []


class StatusAPI:
    """Keeps the status patches the reconciler writes; refuses every Job."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_model_deployment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        raise ApiError(403, "exceeded quota")


def send(url: str, status: ModelDeploymentStatus, event: dict[str, Any]) -> tuple[StatusAPI, ReconcilePlan]:
    api = StatusAPI()
    plan = ReconcilePlan("updated", {"retraining": {"runs": runs_of(status)}}, True, retrain_events=[event])
    md = {**MD, "spec": {"retraining": {"webhook": url}}}
    asyncio.run(Reconciler(api, None)._send_retrain_events(md, plan))  # type: ignore[arg-type]
    return api, plan


def test_the_operator_resends_to_a_webhook_that_was_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "FIRST_DELAY", 0.01)
    down = {"until": webhooks.ATTEMPTS}  # the whole first delivery is refused

    def answer(posts: list[Post]) -> tuple[int, dict[str, str]]:
        return (503 if len(posts) <= down["until"] else 202), {}

    status, event = triggered(hooked())
    with sink(answer) as (url, posts):
        api, plan = send(url, status, event)
        (patch,) = api.patches
        (run,) = patch["retraining"]["runs"]
        assert (run["outcome"], run["webhook"], run["webhookAttempts"]) == ("Sending", "Pending", 1)
        assert "HTTP 503" in plan.decisions[0].message and len(posts) == webhooks.ATTEMPTS
        status.retraining.runs = [RetrainingRun.model_validate(run)]  # type: ignore[union-attr]
        (again,) = plan_retraining(CTX, hooked(), status, {}, parse_time(run["webhookNextAt"])).webhook_events
        api, plan = send(url, status, again)
        (patch,) = api.patches
        assert patch["retraining"]["runs"][0]["outcome"] == "Sent"
        assert [d.reason for d in plan.decisions] == ["RetrainingWebhookAccepted"]
        assert (
            len(posts) == webhooks.ATTEMPTS + 1 and posts[-1].headers["Content-Type"] == "application/cloudevents+json"
        )


@pytest.mark.parametrize(("code", "final"), [(400, True), (404, True), (429, False), (408, False)])
def test_client_errors_are_final_but_a_timeout_or_too_many_requests(
    monkeypatch: pytest.MonkeyPatch, code: int, final: bool
) -> None:
    monkeypatch.setattr(webhooks, "FIRST_DELAY", 0.01)
    status, event = triggered(hooked())
    with sink(lambda posts: (code, {})) as (url, posts):
        api, _ = send(url, status, event)
    (run,) = api.patches[0]["retraining"]["runs"]
    assert run["outcome"] == ("SendFailed" if final else "Sending")
    assert len(posts) == (1 if final else webhooks.ATTEMPTS)


def test_a_run_whose_job_was_refused_sends_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    status = drifting()
    retraining = plan_retraining(CTX, hooked(job=JOB), status, {}, NOW)
    api = StatusAPI()
    plan = ReconcilePlan("updated", {"retraining": {"runs": runs_of(status)}}, True)
    plan.retrain_jobs, plan.retrain_events = retraining.jobs, retraining.webhook_events
    md = {**MD, "spec": {"retraining": {"webhook": HOOK}}}
    with sink(lambda posts: (202, {})) as (url, posts):
        md["spec"]["retraining"]["webhook"] = url
        reconciler = Reconciler(api, None)  # type: ignore[arg-type]
        asyncio.run(reconciler._create_retrain_jobs(md, plan))
        asyncio.run(reconciler._send_retrain_events(md, plan))
    assert posts == []
    (run,) = api.patches[-1]["retraining"]["runs"]
    assert (run["outcome"], run["webhook"]) == ("Failed", "Failed") and "webhookNextAt" not in run
