"""The handlers' metric buffer: counters summed between writes, histogram observations written in bounded
bursts (a second's worth at once filled TorchServe's worker pipe and stalled requests behind it)."""

from __future__ import annotations

from model_handlers.metrics import (
    BATCH_SIZE,
    DEFERRED_VALUES,
    DEFINITIONS,
    OBSERVATIONS_PER_WRITE,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    MetricBuffer,
    Tally,
)
from tests.handlers.conftest import Recorded

BASE = ("m", "1")


def test_observations_are_written_in_bursts_of_a_bounded_size_and_counters_wait_for_the_interval() -> None:
    cache, buffer = Recorded(), MetricBuffer(3600.0)
    tally = Tally([(REQUESTS_TOTAL, DEFINITIONS[REQUESTS_TOTAL], (*BASE, "ok"))])
    batches = OBSERVATIONS_PER_WRITE  # two observations each: two bursts' worth
    for batch in range(batches):
        observations = [
            (REQUEST_DURATION, DEFINITIONS[REQUEST_DURATION], 0.001 * batch, BASE),
            (BATCH_SIZE, DEFINITIONS[BATCH_SIZE], 1, BASE),
        ]
        buffer.add(cache, tally, {0: 1}, observations)
        assert len(cache.updates) == (batch + 1) * 2 // OBSERVATIONS_PER_WRITE * OBSERVATIONS_PER_WRITE
    durations = [value for name, value, _ in cache.updates if name == REQUEST_DURATION]
    assert durations == [0.001 * batch for batch in range(batches)]  # every one, in order
    assert all(name != REQUESTS_TOTAL for name, _, _ in cache.updates)  # summed until the interval is up
    buffer.flush()
    assert [(name, value) for name, value, _ in cache.updates[-1:]] == [(REQUESTS_TOTAL, batches)]


def test_deferred_items_are_counted_in_one_pass_at_the_write_or_once_enough_are_held() -> None:
    """``defer`` holds each batch's values and counts all of them in one call just before the write; a buffer
    with only deferred items pending still writes when due, and holding ``DEFERRED_VALUES`` counts at once."""
    clock = [0.0]
    cache, buffer = Recorded(), MetricBuffer(1.0, clock=lambda: clock[0])
    tally = Tally([(REQUESTS_TOTAL, DEFINITIONS[REQUESTS_TOTAL], (*BASE, "ok"))])
    passes: list[list[int]] = []

    def count(items: list[int]) -> dict[int, float]:
        passes.append(list(items))
        return {0: sum(items)}

    for item in (1, 2, 3):
        buffer.defer(cache, tally, item, 1, count)
    assert passes == [] and cache.updates == []  # held, not counted
    buffer.flush_due()
    assert passes == [[1, 2, 3]]  # one pass over every held batch
    assert [(name, value) for name, value, _ in cache.updates] == [(REQUESTS_TOTAL, 6)]

    buffer.defer(cache, tally, 4, DEFERRED_VALUES - 1, count)
    assert len(passes) == 1
    buffer.defer(cache, tally, 5, 1, count)  # the bound is reached: counted now, written at the interval
    assert passes[1:] == [[4, 5]]
    assert len(cache.updates) == 1
    clock[0] = 1.0
    buffer.flush()
    assert [(name, value) for name, value, _ in cache.updates[1:]] == [(REQUESTS_TOTAL, 9)]
