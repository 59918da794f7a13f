"""A packaged eager model that holds its callers while a gate file is missing, for tests that need requests to
wait behind a batch the test controls."""

from __future__ import annotations

from pathlib import Path

from tests.support.eager_package import eager_model, package_eager

# Every call waits while the gate file is missing (it writes ``WAITING`` first, so a test can tell), and takes at
# least 20 ms, so that the batcher runs its batches in its thread and the event loop stays free to answer.
GATED_MODEL = """
import os
import time

import torch


class GatedClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not os.path.exists(GATE):
            open(WAITING, "w").close()
            while not os.path.exists(GATE):
                time.sleep(0.005)
        time.sleep(0.02)
        return self.linear(x)
"""


def package_gated(root: Path, gate: Path, waiting: Path, **settings: int) -> Path:
    """The gated model packaged as ``gated`` under ``root``; ``settings`` go to the packager."""
    source = f"GATE = {str(gate)!r}\nWAITING = {str(waiting)!r}\n{GATED_MODEL}"
    config = {"kind": "tabular", "task": "classification", "n_features": 4, "labels": ["a", "b", "c"]}
    model = eager_model(source, "GatedClassifier")
    return package_eager(root, "gated", source, model, config, **settings)
