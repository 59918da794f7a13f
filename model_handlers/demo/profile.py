"""Reference profile: input statistics and predicted-class frequencies on held-out data, kept beside a model
so that drift in live traffic can be measured against what the model saw when it was judged good.

Each feature gets fixed bins: decile edges of the reference data with open tails, bin ``i`` holding values in
``(edges[i-1], edges[i]]`` (the first from minus infinity, the last to plus infinity). Counts over fixed bins
add up across workers and pods, and give PSI, Jensen-Shannon or chi-square on the bins directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PROFILE_VERSION = 1
QUANTILES = tuple(q / 10 for q in range(1, 10))


def _r(value: float) -> float:
    return round(float(value), 6)


def bin_edges(values: np.ndarray) -> list[float]:
    """Distinct decile edges (repeated values, as in rounded measurements, collapse into one edge)."""
    return [_r(e) for e in np.unique(np.quantile(values, QUANTILES))]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    """Counts in the open-tailed bins defined by ``edges`` (len(edges) + 1 bins)."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64), side="left")
    return [int(c) for c in np.bincount(index, minlength=len(edges) + 1)]


def feature_profile(name: str, values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    edges = bin_edges(values)
    return {
        "name": name,
        "mean": _r(values.mean()),
        "std": _r(values.std()),
        "min": _r(values.min()),
        "max": _r(values.max()),
        "edges": edges,
        "counts": bin_counts(values, edges),
    }


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image summaries of (N, C, H, W) inputs in 0..1: brightness and how much of the image is ink."""
    flat = images.reshape(len(images), -1)
    return {"mean_intensity": flat.mean(axis=1), "ink_fraction": (flat > 0.5).mean(axis=1)}


def prediction_profile(predicted: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    counts = np.bincount(predicted, minlength=len(labels))
    return {
        "labels": list(labels),
        "counts": [int(c) for c in counts],
        "frequencies": [_r(c / max(1, counts.sum())) for c in counts],
    }


def reference_profile(
    *,
    model: str,
    version: str,
    source: str,
    features: dict[str, np.ndarray],
    predicted: np.ndarray,
    labels: Sequence[str],
    accuracy: float,
) -> dict[str, Any]:
    """The profile JSON document (plain types only, rounded for stable text)."""
    return {
        "profileVersion": PROFILE_VERSION,
        "model": model,
        "version": version,
        "source": source,
        "rows": len(predicted),
        "accuracy": _r(accuracy),
        "features": [feature_profile(name, values) for name, values in features.items()],
        "predictions": prediction_profile(predicted, labels),
    }
