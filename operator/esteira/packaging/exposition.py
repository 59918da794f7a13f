"""Prometheus' text format for what Esteira's own servers count in plain numbers: label values, and the latency
histograms of the local router (per revision, :mod:`esteira.local.stats`) and the pod's front
(:mod:`esteira.packaging.front_metrics`), both kept on an event loop where a registry's lock per observation would
be work for nothing."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def label_text(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def bucket_of(bounds: Sequence[float], seconds: float) -> int:
    """The index of the bucket ``seconds`` falls in (``len(bounds)``: above every bound); a bound's own value is
    inside it, as Prometheus' ``le`` says."""
    return bisect.bisect_left(bounds, seconds)


def histogram_lines(name: str, labels: str, bounds: Sequence[float], counts: Sequence[int], total: float) -> list[str]:
    """One series' ``_bucket`` lines (cumulative, ``+Inf`` last), ``_sum`` and ``_count``; ``counts`` per bucket,
    not cumulative, the last above every bound."""
    lines, running = [], 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        running += count
        lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
    return [*lines, f"{name}_sum{{{labels}}} {total}", f"{name}_count{{{labels}}} {running}"]
