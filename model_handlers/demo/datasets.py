"""The demo datasets, split the same way on every run: scikit-learn's iris and digits (bundled, no network)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits, load_iris
from sklearn.model_selection import train_test_split

SPLIT_SEED = 20240611
HELD_OUT_SHARE = 0.3
DIGITS_SCALE = 16.0  # digits pixels are 0..16; models take 0..1, as an 8-bit image divided by 255 gives


@dataclass(frozen=True)
class Dataset:
    """Train and held-out arrays plus the names the handlers show."""

    name: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=HELD_OUT_SHARE, random_state=SPLIT_SEED, stratify=y
    )
    return x_train, x_test, y_train, y_test


def iris() -> Dataset:
    """4 measured features (cm) -> 3 species."""
    bunch = load_iris()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = _split(x, y)
    return Dataset(
        "iris", tuple(bunch.feature_names), tuple(str(n) for n in bunch.target_names), x_train, y_train, x_test, y_test
    )


def digits() -> Dataset:
    """8x8 grayscale images scaled to 0..1, shaped (N, 1, 8, 8) -> digits 0-9."""
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / DIGITS_SCALE).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = _split(x, y)
    names = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
    return Dataset("digits", names, tuple(str(n) for n in bunch.target_names), x_train, y_train, x_test, y_test)


def biased_labels(y: np.ndarray, moves: dict[int, int], share: float, seed: int) -> np.ndarray:
    """Labels with ``share`` of each class in ``moves`` relabelled as its target class (fixed seed): a model
    trained on them over-predicts the targets, which shifts its predicted-class distribution."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    for source, target in moves.items():
        idx = np.flatnonzero(y == source)
        chosen = rng.choice(idx, size=round(len(idx) * share), replace=False)
        out[chosen] = target
    return out
