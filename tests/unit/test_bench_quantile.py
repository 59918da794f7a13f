"""The operator benchmark reads reconcile p50/p99 from the operator's histogram as histogram_quantile does."""

from __future__ import annotations

import math

import pytest

from tests.bench.operator_bench import Reading, quantile


def reading(buckets: dict[float, float]) -> Reading:
    return Reading(at=0.0, cpu=0.0, cluster_cpu=0.0, buckets=buckets, reconciles=0.0, api_calls={}, reads={})


def test_a_quantile_is_interpolated_within_its_bucket_over_the_window() -> None:
    before = reading({0.01: 5, 0.1: 5, 1.0: 5, math.inf: 5})  # counted before the window: left out
    after = reading({0.01: 5, 0.1: 15, 1.0: 25, math.inf: 25})  # 10 in (0.01, 0.1], 10 in (0.1, 1]
    assert quantile(0.5, before, after) == pytest.approx(0.1)
    assert quantile(0.25, before, after) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(0.99, before, after) == pytest.approx(0.1 + 0.9 * 0.98)


def test_a_quantile_in_the_open_bucket_is_the_highest_bound() -> None:
    after = reading({0.01: 1, 30.0: 1, math.inf: 10})
    assert quantile(0.99, reading({}), after) == 30.0


def test_no_reconcile_in_the_window_has_no_quantile() -> None:
    same = reading({0.01: 3, math.inf: 3})
    assert quantile(0.5, same, same) is None
