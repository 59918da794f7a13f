"""Tiny TorchScript models with fixed weights, their ``esteira-model.json`` files and sample images.

Fixed weights make every answer computable in the test itself, so a test can check that each caller got
exactly its own instances' results.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

FEATURES = ("f0", "f1", "f2", "f3")
TABULAR_LABELS = ("alpha", "beta", "gamma")
IMAGE_LABELS = ("dark", "bright", "checker")
IMAGE_SIZE = 8

TABULAR_WEIGHT = torch.tensor(
    [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, -0.5], [0.0, 0.0, 1.0, 0.25]],
)
TABULAR_BIAS = torch.tensor([0.1, -0.1, 0.0])
REGRESSION_WEIGHT = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
REGRESSION_BIAS = 0.5


def tabular_classifier() -> nn.Module:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.copy_(TABULAR_WEIGHT)
        model.bias.copy_(TABULAR_BIAS)
    return model


def regressor() -> nn.Module:
    model = nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(REGRESSION_WEIGHT)
        model.bias.fill_(REGRESSION_BIAS)
    return model


def checkerboard() -> torch.Tensor:
    rows = torch.arange(IMAGE_SIZE).view(-1, 1)
    cols = torch.arange(IMAGE_SIZE).view(1, -1)
    return ((rows + cols) % 2 * 2 - 1).float()  # +1 / -1


def image_classifier() -> nn.Module:
    """8x8 grayscale, normalised to [-1, 1]: dark vs bright by mean brightness, checker by pattern."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 3))
    linear = model[1]
    assert isinstance(linear, nn.Linear)
    pixels = IMAGE_SIZE * IMAGE_SIZE
    with torch.no_grad():
        linear.weight[0].fill_(-8.0 / pixels)
        linear.weight[1].fill_(8.0 / pixels)
        linear.weight[2].copy_(checkerboard().reshape(-1) * 16.0 / pixels)
        linear.bias.zero_()
    return model


def expected_tabular(features: list[float]) -> tuple[str, list[float]]:
    """The label and probabilities the tabular classifier gives ``features`` (float32, like the server)."""
    logits = tabular_classifier()(torch.tensor([features], dtype=torch.float32))
    probabilities = logits.softmax(dim=1)[0]
    return TABULAR_LABELS[int(probabilities.argmax())], probabilities.tolist()


def expected_regression(features: list[float]) -> float:
    return float(sum(w * x for w, x in zip(REGRESSION_WEIGHT[0].tolist(), features, strict=True)) + REGRESSION_BIAS)


def save_torchscript(model: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


TABULAR_CONFIG: dict[str, Any] = {
    "kind": "tabular",
    "task": "classification",
    "feature_names": list(FEATURES),
    "labels": list(TABULAR_LABELS),
    "max_instances": 8,
    "model_version": "1.0",
}
REGRESSION_CONFIG: dict[str, Any] = {"kind": "tabular", "task": "regression", "n_features": 4, "max_instances": 8}
IMAGE_CONFIG: dict[str, Any] = {
    "kind": "image",
    "image_size": [IMAGE_SIZE, IMAGE_SIZE],
    "channels": 1,
    "mean": [0.5],
    "std": [0.5],
    "labels": list(IMAGE_LABELS),
    "top_k": 2,
    "max_instances": 4,
}


def write_config(directory: Path, config: dict[str, Any], name: str = "esteira-model.json") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(config))
    return path


def png(kind: str, size: int = IMAGE_SIZE, mode: str = "L") -> bytes:
    """A PNG that the image classifier labels ``kind`` (dark, bright or checker)."""
    image = Image.new("L", (size, size), color=0 if kind == "dark" else 255)
    if kind == "checker":
        scale = max(size // IMAGE_SIZE, 1)
        for y in range(size):
            for x in range(size):
                image.putpixel((x, y), 255 if (y // scale + x // scale) % 2 == 1 else 0)
    image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
