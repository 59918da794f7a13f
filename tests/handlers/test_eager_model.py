"""An eager model, packaged as its class's source and a state dict (``esteira package --model-code``), served
by both of Esteira's runtimes: each imports the class from the archive, loads the weights and answers what the
model computes."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.support.eager_package import eager_model, package_eager
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.model_server import ModelServerProcess
from tests.support.torchserve import require_torchserve

pytestmark = [pytest.mark.slow]

SOURCE = """
import torch


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))
"""
CONFIG = {"kind": "tabular", "task": "classification", "n_features": 4, "labels": ["a", "b", "c"], "output": "logits"}
INSTANCES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
RUNTIMES: dict[str, Callable[..., ModelServerProcess | KServeRuntimeProcess]] = {
    "esteira-torchserve": ModelServerProcess,
    "esteira-kserve": KServeRuntimeProcess,
}


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_an_eager_model_packaged_with_its_code_answers_what_it_computes(runtime: str, tmp_path: Path) -> None:
    if runtime == "esteira-torchserve":
        require_torchserve()
    torch.manual_seed(7)
    model = eager_model(SOURCE, "SmallNet")
    with torch.inference_mode():
        expected = model(torch.tensor(INSTANCES)).softmax(dim=1).tolist()
    packaged = package_eager(tmp_path, "small", SOURCE, model, CONFIG)
    with RUNTIMES[runtime](packaged, tmp_path / "run", "1.0.0") as server:
        request = urllib.request.Request(
            f"{server.url}/v1/models/small:predict",
            json.dumps({"instances": INSTANCES}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = json.loads(answer.read())["predictions"]
    for prediction, probabilities in zip(predictions, expected, strict=True):
        assert prediction["label"] == "abc"[max(range(3), key=probabilities.__getitem__)]
        assert [prediction["probabilities"][label] for label in "abc"] == pytest.approx(probabilities, abs=1e-6)
        assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-6)
