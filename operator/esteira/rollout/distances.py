"""Distances between two categorical distributions (predicted-class counts), tolerant of empty classes.

Both take raw counts, so canary and stable can be compared however much traffic each arm served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# Added to every class share before taking logarithms: a class one arm never predicted would otherwise
# make PSI infinite. Small enough not to matter for classes that do occur.
EPSILON = 1e-4


def _shares(counts: Mapping[str, float], classes: list[str]) -> list[float]:
    total = sum(max(0.0, counts.get(c, 0.0)) for c in classes)
    if total <= 0:
        raise ValueError("no observations")
    raw = [max(0.0, counts.get(c, 0.0)) / total + EPSILON for c in classes]
    norm = sum(raw)
    return [r / norm for r in raw]


def population_stability_index(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """PSI = sum((a - e) * ln(a / e)); 0 for identical shares, > 0.2 usually read as a real shift."""
    classes = sorted(set(expected) | set(actual))
    e, a = _shares(expected, classes), _shares(actual, classes)
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def jensen_shannon_distance(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Square root of the Jensen-Shannon divergence in base 2: symmetric, within [0, 1]."""
    classes = sorted(set(expected) | set(actual))
    p, q = _shares(expected, classes), _shares(actual, classes)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]

    def kl(x: list[float], y: list[float]) -> float:
        return sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y, strict=True) if xi > 0)

    divergence = max(0.0, (kl(p, m) + kl(q, m)) / 2)
    return min(1.0, math.sqrt(divergence))
