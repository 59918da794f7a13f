"""A minimal stock TorchServe handler for images, the image rows' baseline: ``BaseHandler`` with KServe v1 bodies.

Like :mod:`benchmarks.stock_handler` for tabular models, it does what any image handler must (decode each
base64 image, grayscale, resize, scale to 0..1, one forward pass per batch, softmax, the top 3) and nothing
Esteira adds (validation, per-request errors, pixel limits, metrics, drift, logging).
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

from model_handlers.threads import intra_op_threads

SIZE = (8, 8)  # the demo digits model's input
TOP = 3


class StockImageHandler(BaseHandler):  # type: ignore[misc]
    def initialize(self, context: Any) -> None:
        super().initialize(context)
        # Esteira's handlers size torch's intra-op pool so; the same here keeps the rows about handler work.
        torch.set_num_threads(intra_op_threads(os.environ))

    def preprocess(self, data: list[Any]) -> torch.Tensor:
        self.sizes = [len(row["body"]["instances"]) for row in data]
        images = [self._decode(instance["b64"]) for row in data for instance in row["body"]["instances"]]
        return torch.stack(images)

    @staticmethod
    def _decode(text: str) -> torch.Tensor:
        with Image.open(io.BytesIO(base64.b64decode(text))) as image:
            pixels = np.asarray(image.convert("L").resize(SIZE, Image.Resampling.BILINEAR), dtype=np.float32)
        return torch.from_numpy(pixels / 255.0).unsqueeze(0)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            probabilities: torch.Tensor = self.model(data).softmax(dim=1)
        return probabilities

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        scores, indices = data.topk(TOP, dim=1)
        rows = [list(zip(i, s, strict=True)) for i, s in zip(indices.tolist(), scores.tolist(), strict=True)]
        answers, start = [], 0
        for size in self.sizes:
            answers.append({"predictions": rows[start : start + size]})
            start += size
        return answers
