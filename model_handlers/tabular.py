"""TorchServe handler for tabular models: a feature vector or named features in, class probabilities or a value out.

Archive it with ``--handler <path of this file>`` (see :func:`model_handlers.handler_file`); TorchServe then
imports it as a top-level module and instantiates its one class, so this module defines exactly one class.
Classification answers ``{"label": ..., "probabilities": {label: p, ...}}`` per instance (v2: ``label`` and
``probabilities`` tensors); regression answers the number (v2: a ``prediction`` tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from model_handlers.base import EsteiraHandler, RequestInputs
from model_handlers.protocol import BadRequest, Instance, Prediction


class TabularHandler(EsteiraHandler):
    """Features -> one forward pass -> per-instance predictions."""

    def example_input(self) -> torch.Tensor:
        return torch.zeros(1, self.config.features)

    def preprocess_instances(self, instances: Sequence[Instance]) -> Sequence[Instance]:
        """The rows of numbers themselves (parsing checked each): a batch's rows become one tensor at once."""
        if any(not isinstance(instance, tuple) for instance in instances):
            raise BadRequest("a tabular model takes numbers, not bytes")
        return instances

    def batch_inputs(self, inputs: Sequence[RequestInputs]) -> torch.Tensor:
        """One array of every request's rows: per request, an array, a tensor and then their concatenation
        cost several times this."""
        rows = cast(Sequence[Sequence[Instance]], inputs)
        joined = rows[0] if len(rows) == 1 else [row for request in rows for row in request]
        return torch.from_numpy(np.array(joined, dtype=np.float32))  # a third of torch.tensor's cost on tuples

    def postprocess_outputs(self, outputs: torch.Tensor) -> list[Prediction]:
        if self.config.task == "regression":
            if outputs.dim() == 2 and outputs.shape[1] > 1:
                return [Prediction(value=tuple(row)) for row in outputs.tolist()]
            return [Prediction(value=float(value)) for value in outputs.reshape(-1).tolist()]
        return [
            Prediction(label=self.labels[best[0]], probabilities=tuple(row)) for row, best in self.classify(outputs)
        ]
