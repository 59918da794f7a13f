"""A minimal stock TorchServe handler for the benchmark's baseline: ``BaseHandler`` with KServe v1 bodies.

It does what any handler must (read the instances, one forward pass per batch, softmax, JSON) and nothing
Esteira adds (validation, per-request errors, metrics, drift, logging), so Esteira's handler in the same
server is measured against it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from model_handlers.threads import intra_op_threads


class StockHandler(BaseHandler):  # type: ignore[misc]
    def initialize(self, context: Any) -> None:
        super().initialize(context)
        # Esteira's handlers size torch's intra-op pool so; the same here keeps the rows about handler work.
        torch.set_num_threads(intra_op_threads(os.environ))

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        self.sizes = [len(row["body"]["instances"]) for row in data]
        return torch.tensor([instance for row in data for instance in row["body"]["instances"]], dtype=torch.float32)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(data).softmax(dim=1)

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        rows, answers, start = data.tolist(), [], 0
        for size in self.sizes:
            answers.append({"predictions": rows[start : start + size]})
            start += size
        return answers
