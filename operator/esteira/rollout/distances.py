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


def _upper_incomplete_gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x): the chi-square survival function is Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x), then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(500):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # continued fraction for Q(a, x) (modified Lentz)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)


def homogeneity_p_value(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    """Chi-square test that both arms draw classes from the same distribution; small p = a real shift.

    Distances between small samples of one distribution are not zero, so a distance over the threshold
    only counts as a shift when this test also says the difference is unlikely to be chance.
    """
    classes = [c for c in sorted(set(expected) | set(actual)) if expected.get(c, 0) + actual.get(c, 0) > 0]
    if len(classes) < 2:
        return 1.0
    rows = [[max(0.0, arm.get(c, 0.0)) for c in classes] for arm in (expected, actual)]
    row_totals = [sum(row) for row in rows]
    total = sum(row_totals)
    if min(row_totals) <= 0:
        return 1.0
    statistic = 0.0
    for j in range(len(classes)):
        column = rows[0][j] + rows[1][j]
        for i in range(2):
            wanted = row_totals[i] * column / total
            statistic += (rows[i][j] - wanted) ** 2 / wanted
    return _upper_incomplete_gamma_q((len(classes) - 1) / 2, statistic / 2)
