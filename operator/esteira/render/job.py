"""A retraining run as a Kubernetes Job: the user's template, named for its deployment and run, carrying
the trigger's evidence in its environment so the training code knows why it runs and what data to read."""

from __future__ import annotations

import copy
import json
from typing import Any

from esteira.render.inferenceservice import RenderContext
from esteira.vocabulary import (
    ENV_DEPLOYMENT,
    ENV_RETRAIN_EVIDENCE,
    ENV_RETRAIN_REASON,
    ENV_RETRAIN_RUN,
    JOB_API_VERSION,
    LABEL_DEPLOYMENT,
    LABEL_RETRAIN_RUN,
)

MAX_JOB_NAME = 63  # the Job controller labels pods with the Job's name: a label value
# A run's Job ends Failed (DeadlineExceeded) after this long unless its template says otherwise: one stuck Pending
# (no node fits it, an image that cannot be pulled) would hold every later trigger for as long as it exists.
DEFAULT_JOB_DEADLINE_SECONDS = 24 * 3600
# A finished Job goes after this long unless its template says otherwise: its outcome is read when it finishes
# (its watch event reconciles the owner), and kept, every run's Job stayed, read on each full read and held in
# the operator's index with its evidence.
DEFAULT_JOB_TTL_SECONDS = 7 * 24 * 3600


def retrain_job_name(deployment: str, run: int) -> str:
    return f"{deployment}-retrain-{run}"[:MAX_JOB_NAME].rstrip("-")


def render_retrain_job(
    ctx: RenderContext, template: dict[str, Any], run: int, reason: str, evidence: dict[str, Any]
) -> dict[str, Any]:
    """The Job for run `run` from `template` (a batch/v1 JobSpec); every container gets the trigger's env."""
    spec = copy.deepcopy(template)
    spec.setdefault("activeDeadlineSeconds", DEFAULT_JOB_DEADLINE_SECONDS)
    spec.setdefault("ttlSecondsAfterFinished", DEFAULT_JOB_TTL_SECONDS)
    env = [
        {"name": ENV_DEPLOYMENT, "value": ctx.deployment},
        {"name": ENV_RETRAIN_RUN, "value": str(run)},
        {"name": ENV_RETRAIN_REASON, "value": reason},
        {"name": ENV_RETRAIN_EVIDENCE, "value": json.dumps(evidence, sort_keys=True)},
    ]
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    for container in pod.get("containers") or []:
        container["env"] = [*(container.get("env") or []), *env]
    labels = {LABEL_DEPLOYMENT: ctx.deployment, LABEL_RETRAIN_RUN: str(run)}
    metadata = spec["template"].setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": {"name": retrain_job_name(ctx.deployment, run), "namespace": ctx.namespace, "labels": labels},
        "spec": spec,
    }
