"""Distances between predicted-class distributions: known values, symmetry and bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esteira.rollout.distances import jensen_shannon_distance, population_stability_index


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
