"""The demo models' reference profiles, built with ``esteira.drift.profile`` on held-out data.

The profile is what live traffic is compared with (``model_handlers.drift`` counts requests into its bins),
so tabular models are profiled on their features and image models on the per-image statistics the handler
computes from decoded pixels (``model_handlers.drift.IMAGE_FEATURES``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esteira.drift.profile import ReferenceProfile, numeric_feature, prediction_baseline
from model_handlers.drift import IMAGE_FEATURES


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of (N, C, H, W) inputs in 0..1, named as the handler names them."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return dict(zip(IMAGE_FEATURES, (flat.mean(axis=1), flat.std(axis=1)), strict=True))


def reference_profile(
    *,
    model: str,
    version: str,
    source: str,
    kind: str,
    features: dict[str, np.ndarray],
    predicted: np.ndarray,
    labels: Sequence[str],
) -> ReferenceProfile:
    """The profile of held-out inputs and the model's predictions on them."""
    rows = len(predicted)
    return ReferenceProfile.model_validate(
        {
            "kind": kind,
            "model": model,
            "version": version,
            "source": source,
            "rows": rows,
            "features": [numeric_feature(name, values.tolist(), rows) for name, values in features.items()],
            "predictions": prediction_baseline([labels[int(i)] for i in predicted], labels),
        }
    )
