"""Model cards and retraining runs read the same in `kubectl esteira` and `esteira status`."""

from __future__ import annotations

from typing import Any

from esteira.kubectl import format_history, format_status
from esteira.local.cli import render_status

CARD = {
    "parentVersion": "1.0.0",
    "validation": {"metric": "accuracy", "score": 0.9712, "better": "higher"},
    "trainingData": {"fingerprint": "sha256:3f2a9c1d00000000", "size": 150},
    "owner": "ml-team",
}
RETRAINING = {
    "lastTriggeredAt": "2026-06-01T12:00:00Z",
    "runs": [
        {
            "run": 2,
            "at": "2026-06-01T12:00:00Z",
            "signal": "Drift",
            "reason": "petal_length drifted",
            "outcome": "RejectedCandidate",
            "version": "1.2.0",
            "message": "accuracy 0.9 is worse than stable's 0.97",
        },
        {
            "run": 1,
            "at": "2026-06-01T06:00:00Z",
            "signal": "Schedule",
            "reason": "scheduled every 6h",
            "outcome": "Succeeded",
            "job": "iris-retrain-1",
        },
    ],
}
HISTORY = [
    {
        "revision": 2,
        "modelVersion": "1.1.0",
        "storageUri": "s3://m/2",
        "startedAt": "2026-06-01T00:00:00Z",
        "outcome": "Active",
        "card": CARD,
    }
]


def md() -> dict[str, Any]:
    status = {"phase": "Ready", "stable": {**HISTORY[0], "since": "x"}, "history": HISTORY, "retraining": RETRAINING}
    return {"metadata": {"name": "iris", "namespace": "models"}, "spec": {}, "status": status}


def test_history_shows_each_revisions_card() -> None:
    text = format_history(md())
    assert "CARD" in text
    assert "from 1.0.0, accuracy 0.9712, data sha256:3f2a9c1d (150 rows), by ml-team" in text


def test_status_lists_retraining_runs_newest_first() -> None:
    text = format_status(md())
    first, second = text.index("run 2 Drift RejectedCandidate -> 1.2.0"), text.index("run 1 Schedule Succeeded")
    assert first < second
    assert "accuracy 0.9 is worse than stable's 0.97" in text
    assert "[iris-retrain-1]" in text


def test_local_status_says_the_same() -> None:
    view = {
        "name": "iris",
        "phase": "Ready",
        "url": "http://127.0.0.1:8080",
        "weights": {"2": 100},
        "status": md()["status"],
    }
    text = render_status(view)
    assert "from 1.0.0, accuracy 0.9712" in text
    assert "run 2 Drift RejectedCandidate -> 1.2.0" in text


def test_a_cards_baseline_reads_beside_its_score() -> None:
    card = {**CARD, "validation": {**CARD["validation"], "baseline": {"version": "1.0.0", "score": 0.9468}}}
    history = [{**HISTORY[0], "card": card}]
    text = format_history({**md(), "status": {**md()["status"], "history": history}})
    assert "accuracy 0.9712 (1.0.0: 0.9468 on the same rows)" in text


def test_a_run_s_webhook_reads_where_its_event_stands() -> None:
    owed = {"run": 3, "at": "x", "signal": "Drift", "reason": "petal_length drifted", "outcome": "Sending"}
    owed |= {"webhook": "Pending", "webhookAttempts": 2, "webhookNextAt": "2026-06-01T12:04:00Z"}
    retraining = {**RETRAINING, "runs": [owed, *RETRAINING["runs"]]}
    text = format_status({**md(), "status": {**md()["status"], "retraining": retraining}})
    assert "run 3 Drift Sending webhook Pending (2 deliveries, next 2026-06-01T12:04:00Z): petal_length" in text
    assert "run 1 Schedule Succeeded [iris-retrain-1]: scheduled" in text, "no webhook, no word of one"
