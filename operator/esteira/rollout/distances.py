"""Distances between two categorical distributions keyed by class (predicted-class counts).

The maths lives in `esteira.drift.stats`; this aligns two class-count mappings into bins, so canary and
stable can be compared however much traffic each arm served and whichever classes each one predicted.
"""

from __future__ import annotations

from collections.abc import Mapping

from esteira.drift import stats


def _aligned(expected: Mapping[str, float], actual: Mapping[str, float]) -> tuple[list[float], list[float]]:
    classes = sorted(set(expected) | set(actual))
    return [expected.get(c, 0.0) for c in classes], [actual.get(c, 0.0) for c in classes]


def population_stability_index(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """PSI between the class shares; 0 for identical shares, > 0.2 usually read as a real shift."""
    return stats.population_stability_index(*_aligned(expected, actual))


def jensen_shannon_distance(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2) between the class shares: symmetric, within [0, 1]."""
    return stats.jensen_shannon_distance(*_aligned(expected, actual))


def homogeneity_p_value(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Chi-square test that both arms draw classes from the same distribution; small p = a real shift.

    Distances between small samples of one distribution are not zero, so a distance over the threshold
    only counts as a shift when this test also says the difference is unlikely to be chance.
    """
    return stats.homogeneity_test(*_aligned(expected, actual))[2]
