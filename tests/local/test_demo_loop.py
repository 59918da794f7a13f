"""The closed loop on this machine: drift triggers retraining, the retrained canary is promoted on its evidence,
and a worse retrained build is refused by the candidate gate with both scores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from esteira.local.demo_loop import Settings, run_loop
from tests.local.conftest import MODELS, ROOT, need_torchserve
from tests.support.prerequisites import require_file

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local")]


def test_drift_retrains_promotes_then_refuses_a_worse_build(tmp_path: Path) -> None:
    need_torchserve()
    summary = ROOT / "build" / "demo" / "summary.json"
    require_file(summary, "run `make models`")
    settings = Settings(label_delay=2, baseline_seconds=10.0, within=240.0)

    runtime, clock, promoted = asyncio.run(run_loop(MODELS, summary, tmp_path, settings))

    reasons = [event.reason for event in runtime.timeline]
    assert promoted, f"revision 2 was not promoted: {runtime.status.last_rollout}"
    for reason in ("DataDrifted", "RetrainingTriggered", "CanaryCreated", "Promoted", "CandidateRejected"):
        assert reason in reasons, f"{reason} missing from {reasons}"
    assert clock.marks["DriftOnset"] <= clock.marks["DataDrifted"] <= clock.marks["RetrainingTriggered"]
    runs = {run.run: run for run in runtime.status.retraining.runs} if runtime.status.retraining else {}
    assert runs[1].signal == "Drift" and runs[1].outcome == "Proposed", runs
    assert runs[1].evidence["labelledData"].endswith("deployment=iris&namespace=demo")
    assert runs[2].outcome == "RejectedCandidate" and "worse than stable's" in runs[2].message, runs
    assert "on the same held-out rows" in runs[2].message, runs  # stable was scored on the candidate's rows
    promoted_record = next(r for r in runtime.status.history if r.revision == 2)
    card = promoted_record.card
    assert card is not None and card.parent_version == "1.0.0" and card.training_data is not None
    assert card.validation is not None and card.training_data.size > 105  # iris' training rows plus logged ones
    assert card.validation.baseline is not None and card.validation.baseline.version == "1.0.0"
    refused = next(r for r in runtime.status.history if r.revision == 3).card  # judged against 1.1.0, stable then
    assert refused is not None and refused.parent_version == "1.1.0" and refused.validation is not None
    assert refused.validation.baseline is not None and refused.validation.baseline.version == "1.1.0"
