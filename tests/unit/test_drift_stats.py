"""Drift maths against scipy on known and random distributions, and verdicts on controlled shifts."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esteira.drift import stats
from esteira.drift.evaluate import MIN_SPREAD, DriftPolicy, DriftWindow, FeatureRule, evaluate, judge, score
from esteira.drift.profile import numeric_feature

scipy_stats = pytest.importorskip("scipy.stats")
scipy_distance = pytest.importorskip("scipy.spatial.distance")

counts = st.lists(st.integers(min_value=0, max_value=5000), min_size=2, max_size=25)


def _pair(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    first = draw(counts.filter(lambda c: sum(c) > 0))
    second = draw(st.lists(st.integers(0, 5000), min_size=len(first), max_size=len(first)).filter(lambda c: sum(c) > 0))
    return first, second


pairs = st.composite(_pair)()


@given(pairs)
def test_jensen_shannon_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    wanted = scipy_distance.jensenshannon(stats.shares(expected), stats.shares(actual), base=2)
    assert stats.jensen_shannon_distance(expected, actual) == pytest.approx(wanted, abs=1e-7)


@given(pairs)
def test_psi_matches_its_definition_on_smoothed_shares(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    e, a = stats.shares(expected), stats.shares(actual)
    wanted = float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True)))
    assert stats.population_stability_index(expected, actual) == pytest.approx(wanted, rel=1e-9, abs=1e-12)


@given(pairs)
def test_homogeneity_test_matches_scipy_chi2_contingency(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    statistic, dof, p_value = stats.homogeneity_test(expected, actual)
    kept = stats.tested_columns(expected, actual)
    if len(kept) < 2:
        assert (dof, p_value) == (0, 1.0)
        return
    table = [[e for e, _ in kept], [a for _, a in kept]]
    result = scipy_stats.chi2_contingency(table, correction=False)
    assert statistic == pytest.approx(result.statistic, rel=1e-9, abs=1e-9)
    assert dof == result.dof
    assert p_value == pytest.approx(result.pvalue, rel=1e-6, abs=1e-12)


@given(st.floats(min_value=0, max_value=500), st.integers(min_value=1, max_value=400))
def test_chi_square_survival_matches_scipy(statistic: float, dof: int) -> None:
    wanted = scipy_stats.chi2.sf(statistic, dof)
    assert stats.chi_square_survival(statistic, dof) == pytest.approx(wanted, rel=1e-6, abs=1e-13)


@given(pairs)
def test_wasserstein_on_bins_matches_scipy(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    positions = [i * 1.5 - 3 for i in range(len(expected))]
    wanted = scipy_stats.wasserstein_distance(positions, positions, expected, actual)
    assert stats.wasserstein_on_bins(expected, actual, positions) == pytest.approx(wanted, rel=1e-9, abs=1e-9)


def test_binned_std_matches_numpy_weighted() -> None:
    np = pytest.importorskip("numpy")
    weights, positions = [3, 0, 5, 9], [-1.0, 0.5, 2.0, 7.0]
    mean = np.average(positions, weights=weights)
    wanted = math.sqrt(np.average((np.array(positions) - mean) ** 2, weights=weights))
    assert stats.binned_std(weights, positions) == pytest.approx(wanted)


def test_mismatched_bins_and_empty_counts_are_errors() -> None:
    with pytest.raises(ValueError, match="bins differ"):
        stats.jensen_shannon_distance([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="no observations"):
        stats.population_stability_index([0, 0], [1, 1])


# -- verdicts on samples of known distributions -----------------------------------------------------------


def _window(shift: float, n: int, seed: int, reference_rows: int = 5000) -> DriftWindow:
    rng = random.Random(seed)
    reference = [rng.gauss(0, 1) for _ in range(reference_rows)]
    profile = numeric_feature("x", reference, rows=reference_rows)
    current: dict[str, float] = {}
    for _ in range(n):
        label = profile.labels[profile.bin_of(rng.gauss(shift, 1))]
        current[label] = current.get(label, 0.0) + 1
    ref = dict(zip(profile.labels, map(float, profile.counts), strict=True))
    return DriftWindow(reference={"x": ref}, current={"x": current}, instances=n)


@pytest.mark.parametrize("n", [100, 1000, 20000])
def test_unshifted_windows_do_not_drift_at_any_size(n: int) -> None:
    drifted = sum(evaluate(_window(0.0, n, seed), DriftPolicy()).verdict == "Drifted" for seed in range(20))
    assert drifted <= 1


@pytest.mark.parametrize("n", [500, 5000])
def test_a_half_std_shift_drifts(n: int) -> None:
    report = evaluate(_window(0.5, n, seed=3), DriftPolicy())
    assert report.verdict == "Drifted"
    assert report.features[0].score is not None and report.features[0].score > 0.3


def test_a_trivial_shift_on_a_huge_window_is_significant_but_below_the_threshold() -> None:
    report = evaluate(_window(0.02, 50000, seed=4), DriftPolicy())
    assert report.features[0].verdict == "NoDrift"


def test_too_small_a_window_says_no_data() -> None:
    report = evaluate(_window(3.0, 40, seed=5), DriftPolicy(min_sample=100))
    assert report.verdict == "NoData"
    assert report.features[0].verdict == "NoData"
    assert report.drifted_share is None


def test_a_large_distance_on_few_requests_is_not_called_drift_without_significance() -> None:
    window = DriftWindow(reference={"c": {"=a": 5, "=b": 5, "*": 0}}, current={"c": {"=a": 2, "=b": 0}})
    verdict = judge("c", window.reference["c"], window.current["c"], DriftPolicy(min_sample=1))
    assert verdict.score is not None and verdict.score > verdict.threshold
    assert verdict.verdict == "NoDrift"


def test_methods_and_thresholds_follow_the_policy_and_its_overrides() -> None:
    policy = DriftPolicy(method="PSI", threshold=0.2, features={"y": FeatureRule(method="JensenShannon")})
    assert policy.rule("x", numeric=True) == ("PSI", 0.2)
    assert policy.rule("y", numeric=True) == ("JensenShannon", 0.2)
    assert DriftPolicy().rule("x", numeric=True) == ("Wasserstein", 0.1)
    assert DriftPolicy().rule("c", numeric=False) == ("JensenShannon", 0.1)
    assert DriftPolicy(method="Wasserstein").rule("c", numeric=False) == ("JensenShannon", 0.1)


def test_categorical_bins_are_judged_with_jensen_shannon_and_quality_rates_are_reported() -> None:
    window = DriftWindow(
        reference={"colour": {"=red": 500, "=blue": 500, "*": 0}},
        current={"colour": {"=red": 900, "=blue": 50, "*": 50}},
        instances=1000,
        violations={("colour", "unknown_category"): 50},
    )
    report = evaluate(window, DriftPolicy())
    assert report.features[0].method == "JensenShannon"
    assert report.verdict == "Drifted"
    assert report.quality == {("colour", "unknown_category"): 0.05}
    quiet = DriftWindow(window.reference, {"colour": {"=red": 2, "*": 1}}, 3, {("colour", "unknown_category"): 1})
    assert evaluate(quiet, DriftPolicy()).quality == {}, "no rate from three requests"


def test_prediction_drift_against_the_baseline() -> None:
    window = DriftWindow(
        reference={},
        current={},
        reference_predictions={"a": 50, "b": 50},
        predictions={"a": 950, "b": 50},
    )
    report = evaluate(window, DriftPolicy())
    assert report.prediction is not None and report.prediction.verdict == "Drift"


def test_a_reference_without_spread_gives_a_finite_wasserstein_score() -> None:
    """All the reference in one bin: normed by the floor, not by zero (an infinite score went into status)."""
    moved = score("Wasserstein", [100, 0, 0], [0, 0, 100], [1.0, 2.0, 3.0])
    assert moved == pytest.approx(2.0 / MIN_SPREAD)
    assert score("Wasserstein", [100, 0, 0], [100, 0, 0], [1.0, 2.0, 3.0]) == 0.0


@given(pairs)
def test_the_tested_bins_keep_every_count_and_expect_enough_in_each_cell(pair: tuple[list[int], list[int]]) -> None:
    expected, actual = pair
    columns = stats.tested_columns(expected, actual)
    assert sum(e for e, _ in columns) == sum(expected) and sum(a for _, a in columns) == sum(actual)
    if len(columns) >= 2:
        rows, total = (sum(expected), sum(actual)), sum(expected) + sum(actual)
        assert all(row * (e + a) / total >= stats.MIN_EXPECTED for e, a in columns for row in rows)


def test_a_canary_like_stable_over_many_rare_classes_rarely_fails() -> None:
    """200 classes of falling frequency, 5,000 stable and 100 canary predictions from one distribution: at a 1 %
    level about 1 % of analyses fail (over the sparse table they failed about 10 %)."""
    rng = random.Random(5)
    classes = range(200)
    weights = [1 / (k + 1) for k in classes]
    trials, failed = 300, 0
    for _ in range(trials):
        stable = Counter(rng.choices(classes, weights, k=5000))
        canary = Counter(rng.choices(classes, weights, k=100))
        failed += stats.homogeneity_test([stable[k] for k in classes], [canary[k] for k in classes])[2] < 0.01
    assert failed / trials <= 0.03
