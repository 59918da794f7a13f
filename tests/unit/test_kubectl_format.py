"""What `kubectl esteira status` prints."""

from __future__ import annotations

from esteira.kubectl import command_patch, format_status
from tests.support.specs import document, spec


def test_status_shows_arms_steps_and_checks() -> None:
    md_body = document(spec(rollout={"steps": [20, 100], "pauseBefore": [100]}), namespace="models")
    md_body["status"] = {
        "phase": "Progressing",
        "stable": {"revision": 1, "modelVersion": "1", "storageUri": "s3://a", "since": "t"},
        "canary": {
            "revision": 2,
            "modelVersion": "2",
            "storageUri": "s3://b",
            "since": "t",
            "weight": 20,
            "step": 0,
            "failedChecks": 1,
            "lastAnalysisAt": "2026-01-01T00:00:00Z",
            "checks": [
                {"name": "error-rate", "value": 0.2, "threshold": "<= 0.01", "sampleSize": 120, "verdict": "Fail"}
            ],
        },
    }
    text = format_status(md_body)
    assert "stable  1         1      80%" in text
    assert "canary  2         2      20%" in text
    assert ">20%" in text and "100% (pause)" in text
    assert "error-rate  0.2    <= 0.01    120     Fail" in text
    assert "failed checks 1/2" in text


def test_status_marks_a_canary_getting_copies_before_its_first_step() -> None:
    rollout = {"steps": [20, 100], "mirror": True, "router": "GatewayAPI"}
    md_body = document(spec(rollout=rollout), namespace="models")
    canary = {"revision": 2, "modelVersion": "2", "storageUri": "s3://b", "since": "t", "weight": 0, "step": 0}
    md_body["status"] = {
        "phase": "Progressing",
        "stable": {"revision": 1, "modelVersion": "1", "storageUri": "s3://a", "since": "t"},
        "canary": {**canary, "copies": "Sending"},
    }
    assert "steps: >copies   20%   100%" in format_status(md_body)
    md_body["status"]["canary"] = {**canary, "weight": 20, "copies": "Passed"}
    assert "steps:  copies  >20%   100%" in format_status(md_body)


def test_command_patch_has_a_fresh_id_each_time() -> None:
    first, second = command_patch("pause"), command_patch("pause")
    key = "serving.esteira.io/command"
    assert first["metadata"]["annotations"][key] != second["metadata"]["annotations"][key]
    assert '"action": "pause"' in first["metadata"]["annotations"][key]
