"""A retraining Job the API server refuses for good ends its run Failed, said in a Warning; the reconcile goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from esteira.controller.reconciler import Reconciler
from esteira.controller.retry import ApiError
from esteira.state.reconcile import ReconcilePlan
from esteira.vocabulary import LABEL_RETRAIN_RUN

MD = {"apiVersion": "serving.esteira.io/v1alpha1", "kind": "ModelDeployment"}
MD |= {"metadata": {"name": "iris", "namespace": "team", "uid": "uid-iris"}, "spec": {}}


class RefusingAPI:
    """Refuses every Job with `status`; keeps the status patches."""

    def __init__(self, status: int) -> None:
        self.status, self.patches = status, []  # type: ignore[var-annotated]

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        raise ApiError(self.status, 'Job.batch "iris-retrain-2" is forbidden: exceeded quota: compute')

    async def patch_model_deployment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


def plan_with_a_job() -> ReconcilePlan:
    trigger = {"at": "2026-06-01T12:00:00Z", "signal": "Schedule", "reason": "scheduled every 6h"}
    runs = [
        {"run": 2, "outcome": "Running", "job": "iris-retrain-2", **trigger},
        {"run": 1, "outcome": "Succeeded", **trigger},
    ]
    job = {"apiVersion": "batch/v1", "kind": "Job"}
    job |= {"metadata": {"name": "iris-retrain-2", "labels": {LABEL_RETRAIN_RUN: "2"}}, "spec": {}}
    return ReconcilePlan(
        result="updated", status={"retraining": {"runs": runs}}, status_changed=True, retrain_jobs=[job]
    )


def test_a_refused_job_ends_its_run_failed_with_the_server_s_message() -> None:
    api, plan = RefusingAPI(403), plan_with_a_job()
    asyncio.run(Reconciler(api, None)._create_retrain_jobs(MD, plan))  # type: ignore[arg-type]
    (patch,) = api.patches
    ran, before = patch["retraining"]["runs"]
    assert ran["outcome"] == "Failed" and "exceeded quota" in ran["message"] and before["outcome"] == "Succeeded"
    (said,) = plan.decisions
    assert (said.reason, said.warning) == ("RetrainingFailed", True) and "iris-retrain-2" in said.message


def test_a_job_refused_for_now_is_left_to_the_next_reconcile() -> None:
    api, plan = RefusingAPI(504), plan_with_a_job()
    with pytest.raises(ApiError):
        asyncio.run(Reconciler(api, None)._create_retrain_jobs(MD, plan))  # type: ignore[arg-type]
    assert api.patches == [] and plan.decisions == []
