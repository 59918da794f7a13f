"""The quality maths against direct computation (scikit-learn's metrics) and the significance tests' error rates."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, mean_absolute_error, precision_recall_fscore_support

from esteira.api.spec import AccuracyCheck
from esteira.quality.scores import Pair, Tally, class_scores, confusion, pair_up, tally
from esteira.quality.significance import accuracy_drop_p_value, mae_rise_p_value
from esteira.rollout.checks import quality_check

LABELS = st.sampled_from(["cat", "dog", "fox"])


def test_pair_up_matches_instances_and_names_what_disagrees() -> None:
    assert pair_up(["a", "b"], ["a", "c"]) == [Pair("a", "a"), Pair("b", "c")]
    assert pair_up([1.5], 2.0) == [Pair(1.5, 2.0)]
    with pytest.raises(ValueError, match="1 answer\\(s\\) but the request had 2"):
        pair_up(["a", "b"], "a")
    with pytest.raises(ValueError, match="label \\(string\\) or a value"):
        pair_up(["a"], [None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="finite"):
        pair_up([1.0], float("nan"))


def test_a_class_as_a_number_matches_it_as_text() -> None:
    """A model answering class 1 is right about a label sent as "1" (compared as text, 1.0 never was)."""
    assert Pair(1.0, "1").correct and Pair("2", 2.0).correct and Pair("1", "1").correct
    assert not Pair(1.0, "2").correct and not Pair("setosa", 1.0).correct and not Pair("1.0", "1").correct
    # One class, one name in the confusion matrix: per-class scores split it in two otherwise.
    assert Pair(1.0, "1").classes == ("1", "1") and Pair("1.0", 1).classes == ("1.0", "1.0")
    assert Pair(2.0, "1").classes == ("2", "1") and Pair(0.5, 1).classes == ("0.5", "1")


@given(st.lists(st.tuples(LABELS, LABELS), min_size=1, max_size=200))
def test_classification_scores_equal_sklearn(rows: list[tuple[str, str]]) -> None:
    pairs = [Pair(p, a) for p, a in rows]
    predicted, actual = [p for p, _ in rows], [a for _, a in rows]
    assert tally(pairs).accuracy == pytest.approx(accuracy_score(actual, predicted))
    labels = sorted(set(predicted) | set(actual))
    precision, recall, f1, support = precision_recall_fscore_support(
        actual, predicted, labels=labels, zero_division=0.0
    )
    scores = class_scores(confusion(pairs))
    for i, label in enumerate(labels):
        mine = scores[label]
        assert (mine.precision or 0.0) == pytest.approx(precision[i])
        assert (mine.recall or 0.0) == pytest.approx(recall[i])
        assert (mine.f1 or 0.0) == pytest.approx(f1[i])
        assert mine.support == support[i]


@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1, max_size=100))
def test_mae_equals_sklearn_and_tallies_add(rows: list[tuple[float, float]]) -> None:
    pairs = [Pair(p, a) for p, a in rows]
    whole = tally(pairs)
    assert whole.mae == pytest.approx(mean_absolute_error([a for _, a in rows], [p for p, _ in rows]))
    half = len(pairs) // 2
    merged = tally(pairs[:half]) + tally(pairs[half:])
    assert merged.labelled == whole.labelled
    assert merged.absolute_error == pytest.approx(whole.absolute_error)


def _arm(rng: random.Random, n: int, accuracy: float) -> Tally:
    correct = sum(rng.random() < accuracy for _ in range(n))
    return Tally(labelled=n, correct=correct)


def test_accuracy_test_rarely_fails_an_equal_canary_and_catches_a_worse_one() -> None:
    rng = random.Random(7)
    trials = 400
    false_alarms = sum(
        accuracy_drop_p_value(_arm(rng, 300, 0.9), _arm(rng, 300, 0.9), margin=0.0) < 0.05 for _ in range(trials)
    )
    assert false_alarms / trials <= 0.08  # a 5% test, with room for sampling noise
    caught = sum(
        accuracy_drop_p_value(_arm(rng, 300, 0.75), _arm(rng, 300, 0.9), margin=0.02) < 0.05 for _ in range(trials)
    )
    assert caught / trials >= 0.95


def test_a_canary_exactly_at_the_tolerance_fails_no_more_than_the_test_s_level() -> None:
    """At the null's edge (canary accuracy = stable's - margin) a 5 % test fails about 5 % of analyses; with the
    variance pooled across arms it failed 16-18 %."""
    rng = random.Random(11)
    trials = 1000
    for stable_rate, margin, stable_n, canary_n in ((0.98, 0.05, 1000, 100), (0.99, 0.02, 1000, 200)):
        failed = sum(
            accuracy_drop_p_value(_arm(rng, canary_n, stable_rate - margin), _arm(rng, stable_n, stable_rate), margin)
            < 0.05
            for _ in range(trials)
        )
        assert failed / trials <= 0.07, (stable_rate, margin, failed / trials)


def test_mae_test_separates_noise_from_a_real_rise() -> None:
    rng = random.Random(3)

    def arm(n: int, scale: float) -> Tally:
        return tally(Pair(rng.gauss(0, scale), 0.0) for _ in range(n))

    trials = 1000
    assert sum(mae_rise_p_value(arm(200, 1.0), arm(200, 1.0), 0.0) < 0.05 for _ in range(trials)) / trials <= 0.07
    assert sum(mae_rise_p_value(arm(200, 2.0), arm(200, 1.0), 0.1) < 0.05 for _ in range(300)) / 300 >= 0.95


def test_quality_check_waits_for_labels_then_judges() -> None:
    check = AccuracyCheck(min_labels=50, tolerance=0.02, label_delay="5m")
    stable = Tally(labelled=400, correct=360)
    waiting = quality_check(check, Tally(400, 200), stable, labels_due=False)
    assert waiting.verdict == "NoData" and "labelDelay" in waiting.message
    few = quality_check(check, Tally(20, 5), stable, labels_due=True)
    assert few.verdict == "NoData" and "not enough labels yet: canary 20, stable 400, 50 needed" in few.message
    small_dip = quality_check(check, Tally(60, 51), stable, labels_due=True)  # 0.85 vs 0.90 on 60 labels
    assert small_dip.verdict == "NoData" and "not significant" in small_dip.message
    worse = quality_check(check, Tally(400, 300), stable, labels_due=True)  # 0.75 vs 0.90
    assert worse.verdict == "Fail" and worse.value == 0.75
    same = quality_check(check, Tally(400, 356), stable, labels_due=True)
    assert same.verdict == "Pass"
    mae = AccuracyCheck(metric="mae", min_labels=30, tolerance=0.1)
    rise = quality_check(mae, Tally(100, 0, 300.0, 1000.0), Tally(100, 0, 100.0, 110.0), labels_due=True)
    assert rise.name == "mae" and rise.verdict == "Fail"
