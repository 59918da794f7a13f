"""Load-time inference optimization of a TorchScript model: ``"optimize": true`` in ``esteira-model.json``.

PyTorch's ``torch.jit.optimize_for_inference`` freezes a TorchScript module (its parameters become constants)
and rewrites the graph for inference: batch norm folded into the convolution before it, linear layers with their
weights transposed once, on CPU oneDNN convolutions. Whether that pays depends on the model. In the serving
table (one intra-op thread): a five-convolution CNN with batch norm ran 1.4x faster on one 64x64 image and 1.9x
on eight; the demo iris MLP's whole handler took 85 instead of 97 us a request; the demo digits CNN (one
8-channel convolution on 8x8 pixels) would have run 3.6x slower on one image, oneDNN's layout conversions
costing more than its convolution.

So the optimized form is a candidate, not a given: the handler keeps it only where, on seeded random inputs
shaped like the model's (one instance, and a full batch), its outputs agree with the model's and it runs faster
by ``MARGIN``; otherwise it serves the model as it was loaded and says why in its log. The outputs of a kept form
differ from the model's by float rounding (a few units in the sixth decimal of a probability for the demo
models), which is why it is asked for, not on by default.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# The optimized form must be this much faster (its time at most 1 - MARGIN of the model's) to be kept: less
# is within what two measurements at load differ by.
MARGIN = 0.05
ROUNDS = 5  # the forms take turns, each round timing every input; a form's time is its best round
ROUND_SECONDS = 0.005  # about this long a round per form and input, at least one call
WARM_UP_CALLS = 3  # TorchScript's profiling executor specializes a graph on its first calls of each shape
# Agreement: the largest difference at most this share of the largest output (at least 1); float16 on a GPU
# rounds at 1e-3.
TOLERANCE = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 1e-2}

Run = Callable[[Any, torch.Tensor], torch.Tensor]  # (model, batch) -> its output, as the handler runs it


@dataclass(frozen=True)
class Timing:
    """A call's seconds on one example input, as loaded and optimized."""

    instances: int
    model_seconds: float
    optimized_seconds: float


@dataclass(frozen=True)
class Outcome:
    """What the optimization came to: whether the optimized form serves, and why (for the log)."""

    kept: bool
    reason: str
    timings: tuple[Timing, ...] = ()  # when both forms were measured


def decide(timings: Sequence[Timing]) -> Outcome:
    """Keep the optimized form where, over the example inputs, a call of it takes ``MARGIN`` less time."""
    figures = "; ".join(
        f"{t.instances} instance{'s' if t.instances > 1 else ''}: {t.model_seconds * 1e6:.1f} us as loaded, "
        f"{t.optimized_seconds * 1e6:.1f} optimized"
        for t in timings
    )
    model = sum(t.model_seconds for t in timings)
    optimized = sum(t.optimized_seconds for t in timings)
    if optimized <= model * (1 - MARGIN):
        return Outcome(True, f"faster on example inputs: {figures}", tuple(timings))
    return Outcome(False, f"not faster on example inputs: {figures}", tuple(timings))


def agreement(expected: torch.Tensor, actual: torch.Tensor, dtype: torch.dtype) -> str | None:
    """Why ``actual`` (the optimized form's output) does not stand for ``expected`` (the model's); None if it does."""
    if actual.shape != expected.shape:
        return f"its outputs are shaped {list(actual.shape)}, not {list(expected.shape)}"
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    difference = float((actual - expected).abs().max()) if expected.numel() else 0.0
    if not difference <= TOLERANCE.get(dtype, TOLERANCE[torch.float32]) * scale:  # NaN differs too
        return f"its outputs differ from the model's by up to {difference:.3g}"
    return None


def example_inputs(example: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """One instance and a full batch shaped like ``example`` (a one-instance input), of seeded values in 0..1."""
    generator = torch.Generator().manual_seed(0)
    sizes = [1] if batch_size <= 1 else [1, batch_size]
    return [torch.rand((size, *example.shape[1:]), generator=generator, dtype=example.dtype) for size in sizes]


def seconds_per_round(run: Run, model: Any, batch: torch.Tensor, calls: int) -> float:
    """The time of ``calls`` runs of ``model`` on ``batch``."""
    began = time.perf_counter()
    for _ in range(calls):
        run(model, batch)
    return time.perf_counter() - began


def timed(run: Run, model: Any, optimized: Any, inputs: Sequence[torch.Tensor]) -> list[Timing]:
    """A call's time of each form on each input, its best of ``ROUNDS``; the forms take turns, so a busy moment
    hits both."""
    timings = []
    for batch in inputs:
        once = max(seconds_per_round(run, form, batch, 1) for form in (model, optimized))
        calls = max(1, min(1000, int(ROUND_SECONDS / max(once, 1e-9))))
        rounds = [
            [seconds_per_round(run, form, batch, calls) / calls for form in (model, optimized)] for _ in range(ROUNDS)
        ]
        timings.append(Timing(batch.shape[0], min(r[0] for r in rounds), min(r[1] for r in rounds)))
    return timings


def optimize_for_serving(
    model: Any, run: Run, inputs: Sequence[torch.Tensor], dtype: torch.dtype
) -> tuple[Any, Outcome]:
    """``model`` rewritten by ``torch.jit.optimize_for_inference`` where that form is kept (see the module
    docstring), else ``model`` itself; and why. Never raises for the model's sake: a model that cannot be
    optimized serves as it was loaded."""
    if not isinstance(model, torch.jit.ScriptModule):
        return model, Outcome(False, "only a TorchScript model is optimized, and this one is not")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
            candidate = torch.jit.optimize_for_inference(model)
    except Exception as error:
        return model, Outcome(False, f"the optimization failed: {_first_line(error)}")
    for batch in inputs:
        try:
            expected = run(model, batch)
        except Exception as error:  # a model that takes one instance only, say: nothing to compare against
            return model, Outcome(False, f"the model fails on {batch.shape[0]} example instances: {_first_line(error)}")
        try:
            for _ in range(WARM_UP_CALLS):
                actual = run(candidate, batch)
        except Exception as error:
            return model, Outcome(False, f"the optimized model fails on an example input: {_first_line(error)}")
        differs = agreement(expected, actual, dtype)
        if differs is not None:
            return model, Outcome(False, differs)
        for _ in range(WARM_UP_CALLS - 1):
            run(model, batch)
    outcome = decide(timed(run, model, candidate, inputs))
    return (candidate if outcome.kept else model), outcome


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
