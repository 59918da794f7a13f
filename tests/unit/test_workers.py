"""esteira-kserve's worker count: read from ESTEIRA_WORKERS, refused by name when out of range."""

from __future__ import annotations

import pytest

from model_handlers.workers import MAX_WORKERS, workers_from_env


def test_one_worker_unless_asked() -> None:
    assert workers_from_env({}) == 1
    assert workers_from_env({"ESTEIRA_WORKERS": " "}) == 1
    assert workers_from_env({"ESTEIRA_WORKERS": "3"}) == 3


@pytest.mark.parametrize(
    ("value", "reason"), [("0", "outside 1..64"), (str(MAX_WORKERS + 1), "outside"), ("two", "not an integer")]
)
def test_a_bad_count_is_refused_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"ESTEIRA_WORKERS={value!r}|ESTEIRA_WORKERS={value}") as refused:
        workers_from_env({"ESTEIRA_WORKERS": value})
    assert reason in str(refused.value)
