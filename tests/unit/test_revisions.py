"""Revision bookkeeping: numbering, stable/canary placement, supersession and bounded history."""

from __future__ import annotations

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import HISTORY_LIMIT, ModelDeploymentStatus, RetrainingStatus
from esteira.rollout.engine import roll_back
from esteira.rollout.revisions import track_revisions, traffic_plan
from tests.support.specs import model, spec

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"


def parse(version: str, strategy: str = "Canary") -> ModelDeploymentSpec:
    return ModelDeploymentSpec.parse(
        spec(model=model(version=version, storageUri=f"s3://m/{version}"), rollout={"strategy": strategy})
    )


def test_first_revision_is_stable() -> None:
    change = track_revisions(parse("1"), ModelDeploymentStatus(), T0)
    status = change.status
    assert status.stable is not None and status.stable.revision == 1
    assert status.canary is None
    assert status.latest_revision == 1
    assert [h.outcome for h in status.history] == ["Active"]
    assert [d.reason for d in change.decisions] == ["RevisionCreated"]


def test_same_model_makes_no_new_revision() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    again = track_revisions(parse("1"), status, T1)
    assert again.status == status
    assert again.decisions == []


def test_new_version_becomes_canary_with_no_traffic() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    change = track_revisions(parse("2"), status, T1)
    canary = change.status.canary
    assert canary is not None and canary.revision == 2 and canary.weight == 0
    assert change.status.stable is not None and change.status.stable.revision == 1
    plan = traffic_plan(change.status)
    assert plan.canary is not None and plan.canary.storage_uri == "s3://m/2"
    assert plan.canary_weight == 0


def test_immediate_strategy_replaces_stable() -> None:
    status = track_revisions(parse("1", "Immediate"), ModelDeploymentStatus(), T0).status
    status = track_revisions(parse("2", "Immediate"), status, T1).status
    assert status.stable is not None and status.stable.revision == 2
    assert status.canary is None
    assert [(h.revision, h.outcome) for h in status.history] == [(2, "Active"), (1, "Superseded")]
    assert status.history[1].finished_at == T1


def test_new_version_mid_rollout_supersedes_the_canary() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    status = track_revisions(parse("2"), status, T1).status
    change = track_revisions(parse("3"), status, T2)
    assert change.status.canary is not None and change.status.canary.revision == 3
    outcomes = {h.revision: h.outcome for h in change.status.history}
    assert outcomes == {3: "Active", 2: "Superseded", 1: "Active"}
    assert [d.reason for d in change.decisions] == ["CanarySuperseded", "CanaryCreated"]


def test_returning_to_stable_version_drops_the_canary() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    status = track_revisions(parse("2"), status, T1).status
    change = track_revisions(parse("1"), status, T2)
    assert change.status.canary is None
    assert change.status.latest_revision == 2
    assert change.status.stable is not None and change.status.stable.revision == 1


def test_history_is_bounded_newest_first() -> None:
    status = ModelDeploymentStatus()
    for version in range(1, HISTORY_LIMIT + 6):
        status = track_revisions(parse(str(version), "Immediate"), status, T0).status
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[0].revision == HISTORY_LIMIT + 5
    assert [h.revision for h in status.history] == sorted((h.revision for h in status.history), reverse=True)


def test_input_status_is_not_mutated() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    snapshot = status.model_copy(deep=True)
    track_revisions(parse("2"), status, T1)
    assert status == snapshot


def test_a_new_storage_uri_alone_starts_a_revision() -> None:
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    moved = ModelDeploymentSpec.parse(spec(model=model(version="1", storageUri="s3://m/1-rebuilt")))
    change = track_revisions(moved, status, T1)
    canary = change.status.canary
    assert canary is not None and canary.revision == 2
    assert (canary.model_version, canary.storage_uri) == ("1", "s3://m/1-rebuilt")
    plan = traffic_plan(change.status)
    assert plan.canary is not None and plan.canary.storage_uri == "s3://m/1-rebuilt"
    assert plan.stable.storage_uri == "s3://m/1"


RETRAINING = {"triggers": {"drift": True}, "command": ["python", "train.py"], "candidateMargin": 0.01}


def carded(
    version: str, score: float, retraining: dict | None = RETRAINING, baseline: dict | None = None
) -> ModelDeploymentSpec:
    validation: dict = {"metric": "accuracy", "score": score}
    if baseline is not None:
        validation["baseline"] = baseline
    card = {"parentVersion": "1", "validation": validation}
    body = spec(model=model(version=version, storageUri=f"s3://m/{version}", card=card))
    if retraining is not None:
        body["retraining"] = retraining
    return ModelDeploymentSpec.parse(body)


def test_each_revision_keeps_its_model_card() -> None:
    status = track_revisions(carded("1", 0.95), ModelDeploymentStatus(), T0).status
    assert status.stable is not None and status.stable.card is not None
    assert status.history[0].card is not None and status.history[0].card.validation is not None
    assert status.history[0].card.validation.score == 0.95


def test_a_worse_retrained_candidate_is_rejected_with_both_scores() -> None:
    status = track_revisions(carded("1", 0.95), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.90), status, T1)
    assert change.status.canary is None
    assert change.status.last_rollout is not None and change.status.last_rollout.outcome == "Rejected"
    assert "0.9" in change.status.last_rollout.reason and "0.95" in change.status.last_rollout.reason
    assert [d.reason for d in change.decisions] == ["CandidateRejected"]
    assert change.status.history[0].outcome == "Rejected"
    again = track_revisions(carded("2", 0.90), change.status, T2)
    assert again.decisions == [] and again.status.canary is None  # judged once


def test_a_card_that_names_its_run_credits_that_run_and_no_other() -> None:
    status = track_revisions(carded("1", 0.95), ModelDeploymentStatus(), T0).status
    runs = [
        {"run": 2, "at": T1, "signal": "Schedule", "reason": "schedule", "outcome": "Running", "job": "command-2"},
        {"run": 1, "at": T0, "signal": "Drift", "reason": "drift", "outcome": "Succeeded", "job": "command-1"},
    ]
    status.retraining = RetrainingStatus.model_validate({"runs": runs, "nextRun": 3})
    card = {"parentVersion": "1", "validation": {"metric": "accuracy", "score": 0.97}, "retrainingRun": 1}
    body = spec(model=model(version="2", storageUri="s3://m/2", card=card), retraining=RETRAINING)
    built_by_1 = ModelDeploymentSpec.parse(body)
    credited = track_revisions(built_by_1, status, T2).status
    assert credited.retraining is not None
    assert [(r.run, r.outcome, r.version) for r in credited.retraining.runs] == [
        (2, "Running", None),
        (1, "Proposed", "2"),
    ]
    unnamed = track_revisions(carded("2", 0.97), status, T2).status  # no run named: the newest open one
    assert unnamed.retraining is not None and unnamed.retraining.runs[0].outcome == "Proposed"


def test_a_candidate_within_the_margin_becomes_the_canary() -> None:
    status = track_revisions(carded("1", 0.95), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.945), status, T1)
    assert change.status.canary is not None and change.status.canary.revision == 2


def test_without_retraining_a_persons_new_version_always_gets_a_canary() -> None:
    status = track_revisions(carded("1", 0.95, None), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.50, None), status, T1)
    assert change.status.canary is not None


def test_a_promoted_candidate_brings_its_card_and_the_next_is_judged_against_it() -> None:
    from esteira.rollout.engine import promote

    status = track_revisions(carded("1", 0.80), ModelDeploymentStatus(), T0).status
    status = track_revisions(carded("2", 0.95), status, T1).status
    assert status.canary is not None
    promote(status, T1, "passed")
    assert status.stable is not None and status.stable.card is not None
    assert status.stable.card.validation is not None and status.stable.card.validation.score == 0.95
    refused = track_revisions(carded("3", 0.90), status, T2)
    assert refused.status.canary is None and [d.reason for d in refused.decisions] == ["CandidateRejected"]


def test_a_baseline_measured_on_the_candidates_rows_is_what_it_must_beat() -> None:
    """Stable's card scored its own held-out rows (0.99); on the drifted rows the candidate was validated on,
    stable scored 0.80: the candidate's 0.90 beats that, like for like."""
    status = track_revisions(carded("1", 0.99), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.90, baseline={"version": "1", "score": 0.80}), status, T1)
    assert change.status.canary is not None and change.status.canary.revision == 2


def test_a_candidate_worse_than_its_baseline_is_rejected_on_the_same_rows() -> None:
    status = track_revisions(carded("1", 0.70), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.90, baseline={"version": "1", "score": 0.95}), status, T1)
    assert change.status.canary is None and [d.reason for d in change.decisions] == ["CandidateRejected"]
    reason = change.status.last_rollout.reason if change.status.last_rollout else ""
    assert "0.9 is worse than stable's 0.95 on the same held-out rows" in reason


def test_a_baseline_of_another_version_falls_back_to_stables_card() -> None:
    """The baseline scored version 0, not stable's 1: it says nothing about stable, whose card then decides."""
    status = track_revisions(carded("1", 0.99), ModelDeploymentStatus(), T0).status
    change = track_revisions(carded("2", 0.90, baseline={"version": "0", "score": 0.50}), status, T1)
    assert change.status.canary is None
    reason = change.status.last_rollout.reason if change.status.last_rollout else ""
    assert "stable's 0.99 on its own card's held-out rows" in reason


def test_an_immediate_rollout_gates_a_retrained_candidate_too() -> None:
    """Placed before it was gated, a candidate far below stable became stable at once."""
    status = track_revisions(carded("1", 0.95), ModelDeploymentStatus(), T0).status
    for field in ({"strategy": "Immediate"}, {"steps": []}):
        candidate = carded("2", 0.50)
        immediate = candidate.model_copy(update={"rollout": candidate.rollout.model_copy(update=field)})
        change = track_revisions(immediate, status, T1)
        assert change.status.stable is not None and change.status.stable.revision == 1, field
        assert [d.reason for d in change.decisions] == ["CandidateRejected"]


def test_cards_that_disagree_on_which_way_is_better_refuse_the_candidate() -> None:
    """Stable's mae is better lower; a candidate card left `better` at its default (higher) passed with a worse
    mae, judged the wrong way round."""
    stable_card = {"validation": {"metric": "mae", "score": 0.20, "better": "lower"}}
    body = spec(model=model(version="1", storageUri="s3://m/1", card=stable_card), retraining=RETRAINING)
    status = track_revisions(ModelDeploymentSpec.parse(body), ModelDeploymentStatus(), T0).status
    candidate = spec(
        model=model(version="2", storageUri="s3://m/2", card={"validation": {"metric": "mae", "score": 0.5}})
    )
    change = track_revisions(ModelDeploymentSpec.parse({**candidate, "retraining": RETRAINING}), status, T1)
    assert change.status.canary is None and [d.reason for d in change.decisions] == ["CandidateRejected"]
    reason = change.status.last_rollout.reason if change.status.last_rollout else ""
    assert "disagree on which way mae is better (candidate: higher, stable: lower)" in reason


def test_a_candidate_without_a_like_for_like_score_rolls_out_saying_why() -> None:
    """Without a stable score of its metric there is nothing to beat: the canary's analysis judges it, and the
    reason, which was thrown away, is in the event."""
    status = track_revisions(carded("1", 0.95, None), ModelDeploymentStatus(), T0).status  # stable has a card
    body = spec(model=model(version="2", storageUri="s3://m/2", card={"validation": {"metric": "f1", "score": 0.1}}))
    change = track_revisions(ModelDeploymentSpec.parse({**body, "retraining": RETRAINING}), status, T1)
    assert change.status.canary is not None
    (created,) = change.decisions
    assert (
        created.reason == "CanaryCreated"
        and "the retraining gate: f1 0.1: no stable score to compare with" in created.message
    )


def test_a_rolled_back_build_named_again_after_another_supersedes_that_one_s_canary() -> None:
    """2 rolled back, 3 a canary, then the spec names 2 again: it had kept 3 rolling out (and could promote it)
    while the spec named 2."""
    status = track_revisions(parse("1"), ModelDeploymentStatus(), T0).status
    status = track_revisions(parse("2"), status, T1).status
    roll_back(status, T1, "error rate 0.2 > 0.01")
    assert track_revisions(parse("2"), status, T1).decisions == []  # just rolled back: not tried again
    status = track_revisions(parse("3"), status, T1).status
    change = track_revisions(parse("2"), status, T2)
    assert [d.reason for d in change.decisions] == ["CanarySuperseded", "CanaryCreated"]
    assert change.status.canary is not None and change.status.canary.model_version == "2"
    assert change.status.canary.revision == 4
