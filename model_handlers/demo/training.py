"""Small torch models and a deterministic CPU training loop for the demo.

No ``from __future__ import annotations`` here: TorchScript reads the modules' attribute annotations as types.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class TabularNet(nn.Module):
    """Standardisation baked in (so the handler feeds raw measurements), then a one-hidden-layer MLP."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.body = nn.Sequential(nn.Linear(mean.numel(), hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.body((x - self.mean) / self.std)
        return logits


class DigitsNet(nn.Module):
    """A tiny CNN for (N, 1, 8, 8) inputs in 0..1: conv, pool, linear."""

    def __init__(self, classes: int = 10, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(channels * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(torch.flatten(self.features(x), 1))
        return logits


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    lr: float
    batch_size: int
    seed: int


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic, single-threaded torch for the duration (thread count changes float sums)."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, settings: TrainSettings) -> nn.Module:
    """Adam on cross-entropy with seeded mini-batch order; returns the model in eval mode."""
    inputs = torch.from_numpy(x)
    targets = torch.from_numpy(y)
    order = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(settings.epochs):
        perm = torch.randperm(len(inputs), generator=order)
        for start in range(0, len(inputs), settings.batch_size):
            batch = perm[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss_fn(model(inputs[batch]), targets[batch]).backward()
            optimizer.step()
    return model.eval()


def predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Class indices for ``x`` (works for eager and TorchScript modules)."""
    with torch.inference_mode():
        logits = model(torch.from_numpy(x))
    classes: np.ndarray = logits.argmax(dim=1).numpy()
    return classes
