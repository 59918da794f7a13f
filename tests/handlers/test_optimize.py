"""``"optimize": true``: the model rewritten for inference at load, kept only where it agrees and is faster.

Which form is faster is measured at load; these tests script those measurements (``seconds_per_round``), so they
check the decision and what the handler then serves, never a timing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import torch
from torch import nn

from model_handlers import optimize
from model_handlers.base import EsteiraHandler
from model_handlers.image import ImageClassifierHandler
from model_handlers.optimize import Outcome, Timing, agreement, decide, example_inputs, optimize_for_serving
from model_handlers.tabular import TabularHandler
from tests.handlers import models
from tests.handlers.conftest import ContextFactory, ModelDir, json_headers, make_model_dir

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]
LOGGER = "model_handlers.base"
INSTANCES = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [-2.0, 0.5, 9.0, 1.0]]


class Candidates:
    """``torch.jit.optimize_for_inference`` as it is, remembering what it made (or made another way)."""

    def __init__(self, make: Any = None) -> None:
        self.made: list[Any] = []
        self.make = make or torch.jit.optimize_for_inference

    def __call__(self, model: Any) -> Any:
        candidate = self.make(model)
        self.made.append(candidate)
        return candidate


class Shifted(nn.Module):
    """The tabular classifier, its logits off by 0.5: an optimization that changed the answers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = models.tabular_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + 0.5


def optimizing(monkeypatch: pytest.MonkeyPatch, optimized_share: float, make: Any = None) -> Candidates:
    """The optimization as PyTorch does it (or as ``make`` does), its candidates remembered and timed as
    :func:`scripted_timing` says."""
    candidates = Candidates(make)
    monkeypatch.setattr(torch.jit, "optimize_for_inference", candidates)
    scripted_timing(monkeypatch, candidates, optimized_share)
    return candidates


def scripted_timing(monkeypatch: pytest.MonkeyPatch, candidates: Candidates, optimized_share: float) -> None:
    """Every call of the loaded model takes 1 ms, of the optimized form ``optimized_share`` of that."""

    def seconds_per_round(run: Any, model: Any, batch: torch.Tensor, calls: int) -> float:
        run(model, batch)
        return calls * 1e-3 * (optimized_share if any(model is made for made in candidates.made) else 1.0)

    monkeypatch.setattr(optimize, "seconds_per_round", seconds_per_round)


def load(tmp_path: Any, make_context: ContextFactory, optimize_it: bool, name: str = "tabular") -> EsteiraHandler:
    config = {**models.TABULAR_CONFIG, "optimize": optimize_it}
    model_dir = make_model_dir(tmp_path, name, models.tabular_classifier(), config)
    handler = TabularHandler()
    handler.initialize(make_context(model_dir))
    handler.model_dir = model_dir  # type: ignore[attr-defined]
    return handler


def answers(handler: EsteiraHandler, make_context: ContextFactory) -> list[dict[str, float]]:
    model_dir: ModelDir = handler.model_dir  # type: ignore[attr-defined]
    rows = [{"body": {"instances": [instance]}} for instance in INSTANCES]
    context = make_context(model_dir, headers=json_headers(len(rows)))
    return [json.loads(answer)["predictions"][0]["probabilities"] for answer in handler.handle(rows, context)]


# --- the decision ----------------------------------------------------------------------------------------


def test_the_optimized_form_is_kept_only_when_faster_by_the_margin() -> None:
    assert decide([Timing(1, 10e-6, 9e-6), Timing(8, 20e-6, 19e-6)]).kept  # 28 against 30: 6.7 % less
    held = decide([Timing(1, 10e-6, 9.5e-6), Timing(8, 20e-6, 19.5e-6)])  # 29 against 30: 3.3 %
    assert not held.kept
    assert held.reason == (
        "not faster on example inputs: 1 instance: 10.0 us as loaded, 9.5 optimized; "
        "8 instances: 20.0 us as loaded, 19.5 optimized"
    )
    assert not decide([Timing(1, 10e-6, 12e-6)]).kept


def test_agreement_names_a_shape_or_a_difference_beyond_rounding() -> None:
    expected = torch.tensor([[1.0, -20.0, 3.0]])
    assert agreement(expected, expected + 1e-3, torch.float32) is None  # 1e-3 of the largest output, 20
    assert agreement(expected, expected + torch.tensor([[0.0, 0.1, 0.0]]), torch.float32) == (
        "its outputs differ from the model's by up to 0.1"
    )
    assert agreement(expected, expected.reshape(3, 1), torch.float32) == "its outputs are shaped [3, 1], not [1, 3]"
    assert agreement(expected, torch.full_like(expected, float("nan")), torch.float32) is not None
    assert agreement(expected, expected + 0.1, torch.float16) is None  # float16 rounds at 1e-2 of 20


def test_example_inputs_are_one_instance_and_a_full_batch_of_the_same_values_each_time() -> None:
    one, batch = example_inputs(torch.zeros(1, 3, 8, 8), 8)
    assert (one.shape, batch.shape) == (torch.Size([1, 3, 8, 8]), torch.Size([8, 3, 8, 8]))
    assert torch.equal(one, example_inputs(torch.zeros(1, 3, 8, 8), 8)[0])
    assert float(batch.min()) >= 0 and float(batch.max()) < 1 and float(batch.std()) > 0
    assert [x.shape for x in example_inputs(torch.zeros(1, 4), 1)] == [torch.Size([1, 4])]


def test_a_model_that_is_not_torchscript_serves_as_it_is() -> None:
    model = nn.Linear(4, 3).eval()
    served, outcome = optimize_for_serving(
        model, lambda m, x: m(x), example_inputs(torch.zeros(1, 4), 8), torch.float32
    )
    assert served is model
    assert outcome == Outcome(False, "only a TorchScript model is optimized, and this one is not")


# --- the handler -----------------------------------------------------------------------------------------


def test_a_faster_optimized_model_serves_and_answers_as_the_model_does(
    tmp_path: Any, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = optimizing(monkeypatch, optimized_share=0.5)
    as_loaded = load(tmp_path / "plain", make_context, optimize_it=False)
    assert candidates.made == []  # off unless asked
    with caplog.at_level(logging.INFO, logger=LOGGER):
        optimized = load(tmp_path / "optimized", make_context, optimize_it=True)
    assert len(candidates.made) == 1 and optimized.model is candidates.made[0]
    assert "the model serves optimized for inference (faster on example inputs: 1 instance: 1000.0 us" in caplog.text
    for got, expected in zip(answers(optimized, make_context), answers(as_loaded, make_context), strict=True):
        assert got.keys() == expected.keys()
        assert all(abs(got[label] - expected[label]) < 1e-6 for label in got)


def test_a_slower_optimized_model_is_not_kept(
    tmp_path: Any, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = optimizing(monkeypatch, optimized_share=0.97)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        handler = load(tmp_path, make_context, optimize_it=True)
    assert len(candidates.made) == 1 and handler.model is not candidates.made[0]
    assert isinstance(handler.model, torch.jit.ScriptModule) and hasattr(handler.model, "training")  # not frozen
    assert "the model serves as loaded, not optimized (not faster on example inputs" in caplog.text


def test_an_optimized_model_that_answers_otherwise_is_not_kept(
    tmp_path: Any, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    candidates = optimizing(monkeypatch, optimized_share=0.1, make=lambda model: torch.jit.script(Shifted()))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        handler = load(tmp_path, make_context, optimize_it=True)
    assert handler.model is not candidates.made[0]
    assert "serves as loaded, not optimized (its outputs differ from the model's by up to 0.5)" in caplog.text


def test_a_model_the_optimization_fails_on_still_serves(
    tmp_path: Any, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def failing(model: Any) -> Any:
        raise RuntimeError("freezing failed: attribute mutated in forward\nmore detail")

    monkeypatch.setattr(torch.jit, "optimize_for_inference", failing)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        handler = load(tmp_path, make_context, optimize_it=True)
    assert "serves as loaded, not optimized (the optimization failed: RuntimeError: freezing failed: " in caplog.text
    expected = dict(zip(models.TABULAR_LABELS, models.expected_tabular(INSTANCES[0])[1], strict=True))
    assert answers(handler, make_context)[0] == pytest.approx(expected)


def test_an_image_model_is_optimized_on_inputs_shaped_like_its_images(
    tmp_path: Any, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[list[int]] = []

    def seconds_per_round(run: Any, model: Any, batch: torch.Tensor, calls: int) -> float:
        shapes.append(list(batch.shape))
        return calls * 1e-3

    monkeypatch.setattr(optimize, "seconds_per_round", seconds_per_round)
    config = {**models.IMAGE_CONFIG, "optimize": True}
    handler = ImageClassifierHandler()
    handler.initialize(make_context(make_model_dir(tmp_path, "image", models.image_classifier(), config)))
    size = models.IMAGE_SIZE
    assert {tuple(shape) for shape in shapes} == {(1, 1, size, size), (8, 1, size, size)}  # the context's batch: 8


def test_the_real_optimization_runs_agrees_and_serves_the_same_answers(
    tmp_path: Any, make_context: ContextFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Unscripted: PyTorch's own rewrite of a TorchScript model, measured; either form must answer the same."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        handler = load(tmp_path, make_context, optimize_it=True)
    verdicts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optimize is set")]
    assert len(verdicts) == 1
    assert "faster on example inputs: 1 instance: " in verdicts[0]  # measured, not failed nor refused
    for instance, probabilities in zip(INSTANCES, answers(handler, make_context), strict=True):
        expected = dict(zip(models.TABULAR_LABELS, models.expected_tabular(instance)[1], strict=True))
        assert probabilities == pytest.approx(expected, abs=1e-6)


def test_a_model_that_fails_on_a_full_batch_is_not_blamed_on_the_rewrite() -> None:
    class OneAtATime(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] != 1:
                raise RuntimeError("one instance at a time")
            return x * 2.0

    model = torch.jit.script(OneAtATime().eval())
    served, outcome = optimize_for_serving(
        model, lambda m, x: m(x), example_inputs(torch.zeros(1, 4), 8), torch.float32
    )
    assert served is model and not outcome.kept
    assert outcome.reason.startswith("the model fails on 8 example instances: ")
