"""A retraining run renders as a valid Kubernetes Job from the user's template, carrying its evidence."""

from __future__ import annotations

import json

from esteira.render import RenderContext
from esteira.render.job import (
    DEFAULT_JOB_DEADLINE_SECONDS,
    DEFAULT_JOB_TTL_SECONDS,
    render_retrain_job,
    retrain_job_name,
)
from tests.support.schemas import validate_kubernetes

TEMPLATE = {
    "backoffLimit": 1,
    "template": {
        "metadata": {"labels": {"team": "ml"}},
        "spec": {
            "containers": [
                {"name": "train", "image": "registry.example.com/iris-train:1", "env": [{"name": "A", "value": "1"}]}
            ]
        },
    },
}


def test_job_is_valid_and_carries_the_evidence() -> None:
    evidence = {"signal": "Drift", "features": {"petal_length": 0.31}, "labelledData": "http://collector/export"}
    job = render_retrain_job(RenderContext("iris", "models"), TEMPLATE, 3, "petal_length drifted", evidence)
    validate_kubernetes(job)
    assert job["metadata"]["name"] == "iris-retrain-3"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["A"] == "1"  # the template's own env stays
    assert env["ESTEIRA_RETRAIN_RUN"] == "3"
    assert json.loads(env["ESTEIRA_RETRAIN_EVIDENCE"]) == evidence
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "ml"
    assert TEMPLATE["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # not mutated


def test_job_names_fit_a_label_value() -> None:
    name = retrain_job_name("a" * 45, 123456)
    assert len(name) <= 63 and not name.endswith("-")


def test_a_job_has_a_deadline_and_a_time_to_live_unless_its_template_sets_its_own() -> None:
    ctx = RenderContext("iris", "models")
    job = render_retrain_job(ctx, TEMPLATE, 1, "schedule", {})
    assert job["spec"]["activeDeadlineSeconds"] == DEFAULT_JOB_DEADLINE_SECONDS
    assert job["spec"]["ttlSecondsAfterFinished"] == DEFAULT_JOB_TTL_SECONDS
    own = {**TEMPLATE, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 60}
    mine = render_retrain_job(ctx, own, 1, "schedule", {})["spec"]
    assert (mine["activeDeadlineSeconds"], mine["ttlSecondsAfterFinished"]) == (600, 60)
    assert "activeDeadlineSeconds" not in TEMPLATE
