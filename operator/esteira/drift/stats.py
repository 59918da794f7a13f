"""Distances and a homogeneity test between two binned distributions given as aligned counts.

Counts, not shares, so the test knows both sample sizes: the reference is a sample too, and a window of 30
requests differs from it by chance far more than a window of 30,000. Every function takes two equally long
count lists (bin i of one is bin i of the other).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Added to every share before taking logarithms: a bin one side never saw would otherwise make PSI infinite.
# Small enough not to matter for bins that do occur.
EPSILON = 1e-4
MIN_EXPECTED = 5.0  # the least count a chi-square cell may expect (Cochran's rule)


def shares(counts: Sequence[float]) -> list[float]:
    """Smoothed shares of non-negative counts (ValueError when nothing was counted)."""
    clipped = [max(0.0, c) for c in counts]
    total = sum(clipped)
    if total <= 0:
        raise ValueError("no observations")
    raw = [c / total + EPSILON for c in clipped]
    norm = sum(raw)
    return [r / norm for r in raw]


def _aligned(expected: Sequence[float], actual: Sequence[float]) -> None:
    if len(expected) != len(actual):
        raise ValueError(f"bins differ: {len(expected)} reference bins, {len(actual)} current bins")


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI = sum((a - e) * ln(a / e)); 0 for identical shares, 0.1 a moderate and 0.25 a large shift."""
    _aligned(expected, actual)
    e, a = shares(expected), shares(actual)
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


def jensen_shannon_distance(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Square root of the Jensen-Shannon divergence in base 2: symmetric, within [0, 1]."""
    _aligned(expected, actual)
    p, q = shares(expected), shares(actual)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]

    def kl(x: list[float], y: list[float]) -> float:
        return sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y, strict=True) if xi > 0)

    return min(1.0, math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def wasserstein_on_bins(expected: Sequence[float], actual: Sequence[float], positions: Sequence[float]) -> float:
    """Earth mover's distance between two histograms whose bins sit at increasing `positions`.

    Exact for data concentrated at the positions; for binned continuous data it is the usual
    approximation, good to about half a bin width.
    """
    _aligned(expected, actual)
    if len(positions) != len(expected):
        raise ValueError(f"{len(positions)} positions for {len(expected)} bins")
    e_total = sum(max(0.0, c) for c in expected)
    a_total = sum(max(0.0, c) for c in actual)
    if e_total <= 0 or a_total <= 0:
        raise ValueError("no observations")
    distance = cumulative_e = cumulative_a = 0.0
    for i in range(len(positions) - 1):
        cumulative_e += max(0.0, expected[i]) / e_total
        cumulative_a += max(0.0, actual[i]) / a_total
        distance += abs(cumulative_e - cumulative_a) * (positions[i + 1] - positions[i])
    return distance


def binned_std(counts: Sequence[float], positions: Sequence[float]) -> float:
    """Standard deviation of a histogram with its mass at `positions`."""
    total = sum(max(0.0, c) for c in counts)
    if total <= 0:
        raise ValueError("no observations")
    mean = sum(max(0.0, c) * x for c, x in zip(counts, positions, strict=True)) / total
    return math.sqrt(sum(max(0.0, c) * (x - mean) ** 2 for c, x in zip(counts, positions, strict=True)) / total)


def chi_square_survival(statistic: float, dof: int) -> float:
    """P(X >= statistic) for a chi-square variable with `dof` degrees of freedom."""
    if dof <= 0:
        return 1.0
    return upper_incomplete_gamma_q(dof / 2, statistic / 2)


def upper_incomplete_gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above)."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P(a, x), then Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(1000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300  # continued fraction for Q(a, x), modified Lentz
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
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


def tested_columns(expected: Sequence[float], actual: Sequence[float]) -> list[tuple[float, float]]:
    """The (expected, actual) bins the chi-square test is taken over: bins empty on both sides dropped, and those
    in which a sample would expect fewer than ``MIN_EXPECTED`` counts pooled into one (added to the smallest other
    bin while still that sparse). The statistic is chi-square distributed only where every cell expects enough:
    over a sparse table (200 classes, 100 canary predictions) a canary like stable failed 10-20 % of analyses at
    a 1 % level."""
    _aligned(expected, actual)
    columns = [(max(0.0, e), max(0.0, a)) for e, a in zip(expected, actual, strict=True) if e + a > 0]
    smaller, total = min(sum(e for e, _ in columns), sum(a for _, a in columns)), sum(e + a for e, a in columns)
    if smaller <= 0:
        return columns

    def sparse(column: tuple[float, float]) -> bool:
        return smaller * (column[0] + column[1]) / total < MIN_EXPECTED

    kept = [column for column in columns if not sparse(column)]
    rest = [column for column in columns if sparse(column)]
    if not rest:
        return kept
    pooled = (sum(e for e, _ in rest), sum(a for _, a in rest))
    if sparse(pooled) and kept:
        smallest = min(range(len(kept)), key=lambda i: kept[i][0] + kept[i][1])
        kept[smallest] = (kept[smallest][0] + pooled[0], kept[smallest][1] + pooled[1])
    else:
        kept.append(pooled)
    return kept


def homogeneity_test(expected: Sequence[float], actual: Sequence[float]) -> tuple[float, int, float]:
    """Chi-square test that both samples come from one distribution: (statistic, degrees of freedom, p), over
    :func:`tested_columns`. Small p means a difference this large is unlikely by chance.
    """
    columns = tested_columns(expected, actual)
    row_totals = (sum(e for e, _ in columns), sum(a for _, a in columns))
    total = sum(row_totals)
    if len(columns) < 2 or min(row_totals) <= 0:
        return 0.0, 0, 1.0
    statistic = 0.0
    for column in columns:
        column_total = column[0] + column[1]
        for i in range(2):
            wanted = row_totals[i] * column_total / total
            statistic += (column[i] - wanted) ** 2 / wanted
    dof = len(columns) - 1
    return statistic, dof, chi_square_survival(statistic, dof)
