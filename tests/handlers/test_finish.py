"""How a batch's outputs are finished: a few values in Python, more through torch, with the same answers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_handlers.base import PYTHON_FINISH_VALUES, EsteiraHandler, all_finite, top_indices

LOGITS = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, width=32)


def classify(outputs: torch.Tensor, k: int, output: str = "logits") -> list[tuple[list[float], list[int]]]:
    handler = SimpleNamespace(config=SimpleNamespace(output=output))
    return EsteiraHandler.classify(handler, outputs, k)  # type: ignore[arg-type]


def through_torch(rows: torch.Tensor, k: int, output: str = "logits") -> list[tuple[list[float], list[int]]]:
    """The rows classified in a batch too large for the Python path (the rows, then copies of them)."""
    copies = PYTHON_FINISH_VALUES // rows.numel() + 1
    return classify(rows.repeat(copies, 1), k, output)[: rows.shape[0]]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=2, max_value=12).flatmap(
        lambda classes: st.lists(st.lists(LOGITS, min_size=classes, max_size=classes), min_size=1, max_size=8)
    ),
    st.integers(min_value=1, max_value=5),
)
def test_python_and_torch_agree(rows: list[list[float]], k: int) -> None:
    outputs = torch.tensor(rows, dtype=torch.float32)
    k = min(k, outputs.shape[1])
    small, large = classify(outputs, k), through_torch(outputs, k)
    assert len(small) == len(large) == len(rows)
    for (probabilities, best), (expected, expected_best) in zip(small, large, strict=True):
        assert probabilities == pytest.approx(expected, abs=1e-6)
        assert math.fsum(probabilities) == pytest.approx(1.0, abs=1e-9)
        # the same classes, in order of probability; ties may be ordered either way
        assert [probabilities[i] for i in best] == pytest.approx([probabilities[i] for i in expected_best], abs=1e-6)
        assert best[0] == max(range(len(probabilities)), key=probabilities.__getitem__)


def test_probabilities_are_taken_as_they_are() -> None:
    outputs = torch.tensor([[0.2, 0.5, 0.3]])
    ((probabilities, best),) = classify(outputs, 2, output="probabilities")
    assert probabilities == pytest.approx([0.2, 0.5, 0.3])
    assert best == [1, 2]
    assert through_torch(outputs, 2, output="probabilities")[0][1] == [1, 2]


def test_ties_go_to_the_first_class() -> None:
    assert top_indices([0.1, 0.4, 0.4, 0.1], 1) == [1]
    assert top_indices([0.1, 0.4, 0.4, 0.1], 3) == [1, 2, 0]


def test_extreme_logits_give_a_distribution() -> None:
    ((probabilities, best),) = classify(torch.tensor([[3e38, -3e38, 0.0]]), 1)
    assert probabilities == [1.0, 0.0, 0.0]
    assert best == [0]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("shape", [(3,), (2, 3), (PYTHON_FINISH_VALUES,), (PYTHON_FINISH_VALUES + 1,), (2, 2, 3)])
def test_all_finite_finds_a_bad_value_at_any_size(bad: float, shape: tuple[int, ...]) -> None:
    outputs = torch.zeros(shape)
    assert all_finite(outputs)
    outputs.view(-1)[-1] = bad
    assert not all_finite(outputs)


def test_all_finite_does_not_overflow_on_large_finite_values() -> None:
    assert all_finite(torch.full((2, 3), 3e38))
