"""The adaptive batcher: no wait for a lone request, batches from what queued meanwhile, errors to every caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from model_handlers.batcher import AdaptiveBatcher


class Model:
    """Doubles its inputs; the first batch can be held to let others queue behind it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.running = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.running.set()
        self.hold.wait(10)
        self.batches.append(list(items))
        if -1 in items:
            raise ValueError("the model cannot take -1")
        return [item * 2 for item in items]


def test_a_lone_request_runs_at_once_in_a_batch_of_its_own() -> None:
    model = Model()

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8)
        results = [await batcher.submit(item) for item in (1, 2, 3)]
        batcher.close()
        return results

    assert asyncio.run(scenario()) == [2, 4, 6]
    assert model.batches == [[1], [2], [3]]


def test_requests_that_queue_behind_a_running_batch_go_together_up_to_the_limit() -> None:
    model = Model()
    model.hold.clear()

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(model, max_batch_size=3)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 6)]
        await asyncio.sleep(0)  # let every submit enqueue before the held batch finishes
        model.hold.set()
        results = await asyncio.gather(first, *rest)
        assert (batcher.batches, batcher.batched) == (3, 6)
        batcher.close()
        return list(results)

    assert asyncio.run(scenario()) == [0, 2, 4, 6, 8, 10]
    assert model.batches == [[0], [1, 2, 3], [4, 5]]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    model = Model()

    async def scenario() -> int:
        batcher = AdaptiveBatcher(model, max_batch_size=4)
        with pytest.raises(ValueError, match="cannot take -1"):
            await batcher.submit(-1)
        result = await batcher.submit(5)
        batcher.close()
        return result

    assert asyncio.run(scenario()) == 10


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        AdaptiveBatcher(Model(), max_batch_size=0)
