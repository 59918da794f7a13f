"""``python -m model_handlers.demo.build --out DIR``: train the four demo models and write, per model,
``DIR/<name>-<version>/`` with the TorchScript model and the files its handler reads (plus sample request
bodies in ``DIR/requests/``), then print held-out accuracy. GOOD versions are 1.0.0; WORSE versions are 1.1.0, trained on biased labels (and the digits one
also undertrained), so both their accuracy and their predicted-class distribution differ from 1.0.0's.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from model_handlers.config import parse_config
from model_handlers.demo import datasets, profile
from model_handlers.demo.training import DigitsNet, TabularNet, TrainSettings, deterministic, predict, train

MODEL_FILE = "model.pt"
HANDLER_CONFIG = "esteira-model.json"
PROFILE_FILE = "reference-profile.json"
EXTRA_FILES = (HANDLER_CONFIG, PROFILE_FILE)


@dataclass(frozen=True)
class Variant:
    """One demo model version and how it is trained."""

    name: str
    version: str
    quality: str  # "good" or "worse"
    handler: str  # esteira package --handler
    dataset: Callable[[], datasets.Dataset]
    make_model: Callable[[datasets.Dataset], nn.Module]
    settings: TrainSettings
    label_moves: dict[int, int] = field(default_factory=dict)  # biased training labels: class -> class
    moved_share: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def _tabular(data: datasets.Dataset) -> nn.Module:
    x = torch.from_numpy(data.x_train)
    return TabularNet(x.mean(dim=0), x.std(dim=0), classes=len(data.labels))


def _digits(data: datasets.Dataset) -> nn.Module:
    return DigitsNet(classes=len(data.labels))


VARIANTS = (
    Variant("iris", "1.0.0", "good", "tabular", datasets.iris, _tabular, TrainSettings(150, 0.02, 16, seed=7)),
    # Most virginica taught as versicolor: versicolor is over-predicted and virginica nearly vanishes.
    Variant(
        "iris",
        "1.1.0",
        "worse",
        "tabular",
        datasets.iris,
        _tabular,
        TrainSettings(150, 0.02, 16, seed=7),
        label_moves={2: 1},
        moved_share=0.7,
    ),
    Variant("digits", "1.0.0", "good", "image", datasets.digits, _digits, TrainSettings(25, 0.01, 32, seed=11)),
    # Fewer epochs, and most 5s, 8s and 9s taught as 3s.
    Variant(
        "digits",
        "1.1.0",
        "worse",
        "image",
        datasets.digits,
        _digits,
        TrainSettings(4, 0.01, 32, seed=11),
        label_moves={5: 3, 8: 3, 9: 3},
        moved_share=0.7,
    ),
)


@dataclass(frozen=True)
class Built:
    variant: Variant
    directory: Path
    accuracy: float
    frequencies: list[float]


def handler_config(variant: Variant, data: datasets.Dataset) -> dict[str, Any]:
    """``esteira-model.json`` (schema: ``model_handlers.config.ModelConfig``): how requests become tensors and
    logits become answers. Digits models take 0..1 pixels, which is what decoding an 8-bit image gives, so
    no mean or std is set."""
    config: dict[str, Any] = {"kind": variant.handler, "task": "classification", "labels": list(data.labels)}
    if variant.handler == "tabular":
        config["feature_names"] = list(data.feature_names)
    else:
        config |= {"image_size": [8, 8], "channels": 1, "top_k": 3}
    config |= {"output": "logits", "model_name": variant.name, "model_version": variant.version}
    parse_config(config)  # fail here, not in the model server, if the handlers' schema disagrees
    return config


def _profile_features(variant: Variant, data: datasets.Dataset) -> dict[str, np.ndarray]:
    if variant.handler == "tabular":
        return {name: data.x_test[:, i] for i, name in enumerate(data.feature_names)}
    return profile.image_features(data.x_test)


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """TorchScript by scripting (no example-dependent control flow is frozen in); ``example`` checks it runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
        scripted = torch.jit.script(model)
        scripted(example)
        torch.jit.save(scripted, str(path))


def build_variant(variant: Variant, out: Path) -> Built:
    """Train, export and describe one variant under ``out/<name>-<version>/``."""
    data = variant.dataset()
    labels = data.y_train
    if variant.label_moves:
        labels = datasets.biased_labels(labels, variant.label_moves, variant.moved_share, variant.settings.seed)
    with deterministic(variant.settings.seed):
        model = train(variant.make_model(data), data.x_train, labels, variant.settings)
        predicted = predict(model, data.x_test)
    accuracy = float((predicted == data.y_test).mean())
    directory = out / variant.key
    directory.mkdir(parents=True, exist_ok=True)
    export(model, torch.from_numpy(data.x_test[:2]), directory / MODEL_FILE)
    document = profile.reference_profile(
        model=variant.name,
        version=variant.version,
        source=f"held-out {datasets.HELD_OUT_SHARE:.0%} of scikit-learn's {data.name} (split seed {datasets.SPLIT_SEED})",
        kind=variant.handler,
        features=_profile_features(variant, data),
        predicted=predicted,
        labels=data.labels,
    )
    (directory / PROFILE_FILE).write_text(document.to_json())
    _write_json(directory / HANDLER_CONFIG, handler_config(variant, data))
    frequencies = np.bincount(predicted, minlength=len(data.labels)) / len(predicted)
    return Built(variant, directory, accuracy, [round(float(f), 6) for f in frequencies])


def _png_b64(image: np.ndarray) -> str:
    """One (1, H, W) image in 0..1 as a base64 PNG, the way a client sends it to the image handler."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image[0] * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_sample_requests(out: Path, rows: int = 3) -> None:
    """Request bodies for trying the served models: held-out rows in KServe v1 and Open Inference Protocol v2."""
    folder = out / "requests"
    folder.mkdir(parents=True, exist_ok=True)
    iris = datasets.iris().x_test[:rows]
    _write_json(folder / "iris-v1.json", {"instances": iris.tolist()})
    tensor = {"name": "features", "shape": list(iris.shape), "datatype": "FP32", "data": iris.ravel().tolist()}
    _write_json(folder / "iris-v2.json", {"inputs": [tensor]})
    images = [_png_b64(image) for image in datasets.digits().x_test[:rows]]
    _write_json(folder / "digits-v1.json", {"instances": [{"b64": b64} for b64 in images]})
    _write_json(
        folder / "digits-v2.json", {"inputs": [{"name": "image", "shape": [rows], "datatype": "BYTES", "data": images}]}
    )


def build_all(out: Path, variants: Sequence[Variant] = VARIANTS) -> list[Built]:
    out.mkdir(parents=True, exist_ok=True)
    built = [build_variant(v, out) for v in variants]
    write_sample_requests(out)
    summary = [
        {
            "name": b.variant.name,
            "version": b.variant.version,
            "quality": b.variant.quality,
            "handler": b.variant.handler,
            "directory": b.directory.name,
            "model_file": MODEL_FILE,
            "extra_files": list(EXTRA_FILES),
            "accuracy": round(b.accuracy, 4),
            "predicted_frequencies": b.frequencies,
        }
        for b in built
    ]
    _write_json(out / "summary.json", summary)
    return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_handlers.demo.build", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="Output directory.")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for b in build_all(args.out):
        freqs = " ".join(f"{f:.2f}" for f in b.frequencies)
        print(f"{b.variant.key:<14} {b.variant.quality:<5} held-out accuracy {b.accuracy:.3f}  predicted [{freqs}]")
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
