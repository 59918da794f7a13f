"""Distances between predicted-class distributions: known values, symmetry and bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esteira.api.spec import Analysis
from esteira.rollout.checks import run_checks
from esteira.rollout.distances import homogeneity_p_value, jensen_shannon_distance, population_stability_index
from esteira.rollout.evidence import ArmSample, Evidence


def test_identical_distributions_are_at_distance_zero() -> None:
    counts = {"a": 30, "b": 70}
    assert population_stability_index(counts, {"a": 3, "b": 7}) == pytest.approx(0, abs=1e-9)
    assert jensen_shannon_distance(counts, {"a": 300, "b": 700}) == pytest.approx(0, abs=1e-6)


def test_known_psi_value() -> None:
    # shares 0.5/0.5 -> 0.9/0.1: (0.4 ln 1.8) + (-0.4 ln 0.2) = 0.8789
    assert population_stability_index({"a": 50, "b": 50}, {"a": 90, "b": 10}) == pytest.approx(0.8789, abs=2e-3)


def test_disjoint_distributions_are_at_the_jensen_shannon_maximum() -> None:
    assert jensen_shannon_distance({"a": 10}, {"b": 10}) == pytest.approx(1.0, abs=1e-3)


def test_a_class_only_one_arm_predicts_gives_a_finite_psi() -> None:
    value = population_stability_index({"a": 100}, {"a": 50, "b": 50})
    assert math.isfinite(value) and value > 1


def test_no_observations_is_an_error() -> None:
    with pytest.raises(ValueError, match="no observations"):
        jensen_shannon_distance({"a": 0}, {"a": 5})


COUNTS = st.dictionaries(st.sampled_from("abcde"), st.integers(min_value=1, max_value=10_000), min_size=1)


@given(COUNTS, COUNTS)
def test_jensen_shannon_is_symmetric_and_bounded(p: dict[str, int], q: dict[str, int]) -> None:
    forward, backward = jensen_shannon_distance(p, q), jensen_shannon_distance(q, p)
    assert forward == pytest.approx(backward, abs=1e-9)
    assert 0 <= forward <= 1


@given(COUNTS, COUNTS)
def test_psi_is_non_negative(p: dict[str, int], q: dict[str, int]) -> None:
    assert population_stability_index(p, q) >= -1e-12


# Reference p-values of the chi-square test of homogeneity (no continuity correction), as computed by
# scipy.stats.chi2_contingency for the same tables.
@pytest.mark.parametrize(
    ("stable", "canary", "p"),
    [
        ({"x": 30, "y": 25, "z": 28}, {"x": 8, "y": 7, "z": 8}, 0.99216662),
        ({"x": 30, "y": 30, "z": 30}, {"x": 21, "y": 1, "z": 1}, 3.9959967e-06),
        ({"x": 510, "y": 490, "z": 500}, {"x": 500, "y": 480, "z": 520}, 0.74294759),
    ],
)
def test_homogeneity_p_value_matches_reference(stable: dict[str, int], canary: dict[str, int], p: float) -> None:
    assert homogeneity_p_value(stable, canary) == pytest.approx(p, rel=1e-6)


def test_homogeneity_of_one_class_or_an_empty_arm_is_no_evidence() -> None:
    assert homogeneity_p_value({"a": 10}, {"a": 3}) == 1.0
    assert homogeneity_p_value({"a": 10, "b": 3}, {}) == 1.0


def test_small_samples_over_the_line_wait_instead_of_failing() -> None:
    """Two samples of one distribution: a distance over the threshold by chance must not fail the canary."""
    analysis = Analysis.model_validate({"minRequests": 10, "predictionShift": {"max": 0.1}})
    noisy = Evidence(
        canary=ArmSample(requests=12, class_counts={"a": 7, "b": 3, "c": 2}),
        stable=ArmSample(requests=60, class_counts={"a": 20, "b": 20, "c": 20}),
    )
    (check,) = [c for c in run_checks(analysis, noisy, 20) if c.name.startswith("prediction-shift")]
    assert check.value is not None and check.value > 0.1
    assert check.verdict == "NoData" and "not significant" in check.message
    shifted = Evidence(
        canary=ArmSample(requests=200, class_counts={"a": 180, "b": 10, "c": 10}),
        stable=ArmSample(requests=600, class_counts={"a": 200, "b": 200, "c": 200}),
    )
    (check,) = [c for c in run_checks(analysis, shifted, 20) if c.name.startswith("prediction-shift")]
    assert check.verdict == "Fail"


def test_a_stable_that_predicted_nothing_in_the_interval_gives_no_data_not_an_error() -> None:
    """Its classes are published at 0 and counted so while it answered only errors: the distance raised, and
    every reconcile with it, so a pause or an abort was never carried out."""
    analysis = Analysis.model_validate({"predictionShift": {"max": 0.1}})
    quiet = Evidence(
        canary=ArmSample(requests=100, class_counts={"a": 60, "b": 40}),
        stable=ArmSample(requests=900, errors=900, class_counts={"a": 0.0, "b": 0.0}),
    )
    (check,) = [c for c in run_checks(analysis, quiet, 10) if c.name.startswith("prediction-shift")]
    assert (check.verdict, check.value) == ("NoData", None)


def test_a_p95_at_the_top_of_the_duration_buckets_is_never_shown_under_a_cap_at_or_over_it() -> None:
    """histogram_quantile reads a p95 in +Inf as the top bound, 10 s: a canary taking a minute a request passed a
    20 s cap, and a ratio against a stable as slow passed too."""
    analysis = Analysis.model_validate({"latency": {"p95MaxSeconds": 20, "maxIncreaseRatio": 1.5}})
    slow = Evidence(canary=ArmSample(requests=100, latency_p95=10.0), stable=ArmSample(requests=900, latency_p95=10.0))
    checks = {c.name: c for c in run_checks(analysis, slow, 10)}
    assert checks["latency-p95"].verdict == "Fail" and "top of the duration buckets" in checks["latency-p95"].message
    assert checks["latency-p95-ratio"].verdict == "NoData"
    quick = Evidence(canary=ArmSample(requests=100, latency_p95=0.2), stable=ArmSample(requests=900, latency_p95=0.2))
    assert {c.name: c.verdict for c in run_checks(analysis, quick, 10)} == {
        "error-rate": "Pass",
        "latency-p95": "Pass",
        "latency-p95-ratio": "Pass",
    }
