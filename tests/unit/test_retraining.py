"""Retraining triggers are debounced and bounded; a candidate rolls out only when it is at least as good."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.retraining.gate import Candidate, judge_candidate
from esteira.retraining.trigger import History, Policy, Signal, decide
from esteira.vocabulary import format_time

NOW = datetime(2026, 6, 1, 12, 0, 0)
DRIFT = Signal("Drift", "drift-2026-06-01T11:00:00Z", "petal_length drifted (JS 0.31)", {"features": ["petal_length"]})
ACCURACY = Signal("Accuracy", "accuracy-2026-06-01T10:00:00Z", "accuracy 0.81 below floor 0.9")
POLICY = Policy(kinds=frozenset({"Drift", "Accuracy"}), min_interval="6h")


def test_a_new_incident_fires_with_its_evidence() -> None:
    verdict = decide(POLICY, History(), [DRIFT], NOW)
    assert verdict.fire and verdict.signal == DRIFT
    assert verdict.signal.evidence == {"features": ["petal_length"]}


def test_the_same_incident_fires_once() -> None:
    verdict = decide(POLICY, History(handled=frozenset({DRIFT.incident})), [DRIFT], NOW)
    assert not verdict.fire and verdict.reason == "no new incident"


def test_signals_the_policy_does_not_count_are_ignored() -> None:
    quality = Signal("DataQuality", "dq-1", "missing values in sepal_width")
    assert not decide(POLICY, History(), [quality], NOW).fire


def test_at_most_one_run_at_a_time() -> None:
    verdict = decide(POLICY, History(running="iris-retrain-3"), [DRIFT], NOW)
    assert not verdict.fire and "still running" in verdict.reason


def test_min_interval_holds_the_next_trigger() -> None:
    recent = History(last_triggered_at=format_time(NOW - timedelta(hours=1)))
    assert not decide(POLICY, recent, [DRIFT], NOW).fire
    old = History(last_triggered_at=format_time(NOW - timedelta(hours=7)))
    assert decide(POLICY, old, [DRIFT], NOW).fire


def test_schedule_fires_once_per_period() -> None:
    policy = Policy(kinds=frozenset(), min_interval="1h", schedule="24h")
    first = decide(policy, History(), [], NOW)
    assert first.fire and first.signal is not None and first.signal.kind == "Schedule"
    soon = History(last_triggered_at=format_time(NOW), handled=frozenset({first.signal.incident}))
    assert not decide(policy, soon, [], NOW + timedelta(hours=23)).fire
    assert decide(policy, soon, [], NOW + timedelta(hours=24)).fire


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([DRIFT, ACCURACY]), st.integers(0, 600)), max_size=30))
def test_never_more_often_than_min_interval(events: list[tuple[Signal, int]]) -> None:
    """Whatever signals arrive, two triggers are at least minInterval apart and each incident fires once."""
    history, now, fired = History(), NOW, []
    for signal, minutes in events:
        now += timedelta(minutes=minutes)
        verdict = decide(POLICY, history, [signal], now)
        if verdict.fire and verdict.signal is not None:
            fired.append((now, verdict.signal.incident))
            history = History(handled=history.handled | {verdict.signal.incident}, last_triggered_at=format_time(now))
    assert all(b[0] - a[0] >= timedelta(hours=6) for a, b in itertools.pairwise(fired))
    assert len({incident for _, incident in fired}) == len(fired)


@pytest.mark.parametrize(
    ("score", "stable", "margin", "better", "proposed"),
    [
        (0.95, 0.94, 0.0, "higher", True),
        (0.93, 0.94, 0.0, "higher", False),
        (0.93, 0.94, 0.02, "higher", True),
        (0.30, 0.25, 0.0, "lower", False),
        (0.20, 0.25, 0.0, "lower", True),
        (0.50, None, 0.0, "higher", True),
    ],
)
def test_candidate_gate(score: float, stable: float | None, margin: float, better: str, proposed: bool) -> None:
    verdict = judge_candidate(Candidate("1.2.0", "accuracy", score), stable, margin, better)  # type: ignore[arg-type]
    assert verdict.proposed is proposed
    assert f"{score:g}" in verdict.reason
    if stable is not None:
        assert f"{stable:g}" in verdict.reason
