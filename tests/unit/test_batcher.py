"""The adaptive batcher: no wait for a lone request, batches from what queued meanwhile, errors to every caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from esteira.packaging.caller_queue import LEAVING_WINDOW_SECONDS
from model_handlers import batcher as batcher_module
from model_handlers.batcher import (
    POLL_START_SECONDS,
    PROBE_CEILING,
    PROBE_EVERY,
    Abandoned,
    AdaptiveBatcher,
    Halted,
    Late,
    PollWindow,
)
from tests.support.waiting import until


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
        batcher = AdaptiveBatcher(model, max_batch_size=3, inline_below=0.0)  # in the thread: the loop stays free
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


def test_requests_whose_callers_left_while_they_waited_are_not_run_and_the_batch_fills_from_behind_them() -> None:
    """Callers 2, 3 and 5 leave while batch [0] runs: the next batch takes 1, 4 and 6 (filled up to the limit
    from further back), the one after 7; the callers that left are told, and counted."""
    model = Model()
    model.hold.clear()
    left: dict[int, float] = {}  # when each caller that left did

    async def scenario() -> list[BaseException | int]:
        batcher = AdaptiveBatcher(model, max_batch_size=3, inline_below=0.0, left=left.get)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 8)]
        await asyncio.sleep(0)
        left.update(dict.fromkeys((2, 3, 5), time.perf_counter()))  # known only when their batch is made
        model.hold.set()
        outcomes = list(await asyncio.gather(first, *rest, return_exceptions=True))
        assert (batcher.batches, batcher.batched, batcher.abandoned) == (3, 5, 3)
        batcher.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert model.batches == [[0], [1, 4, 6], [7]]
    assert [o if isinstance(o, int) else type(o) for o in outcomes] == [
        0,
        2,
        Abandoned,
        Abandoned,
        8,
        Abandoned,
        12,
        14,
    ]


class Clock:
    """The batcher's ``time``: a clock the test moves, so that how long each request has waited is known."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_while_callers_give_up_the_newest_are_served_first_and_one_that_outlived_them_before_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches of one. Callers 1 and 2 leave after 200 ms in the queue, found gone as batch [3] is made: callers
    are giving up, so 5, 6 and 7 (queued 150 ms after the others) go newest first, except 4, which has waited as
    long as those who left and has a patient caller. Once no caller has left for a while, 11, 12 and 13 go oldest
    first again."""
    clock = Clock()
    monkeypatch.setattr(batcher_module, "time", clock)
    model = Model()
    model.hold.clear()
    left: dict[int, float] = {}

    async def held_then_queued(
        batcher: AdaptiveBatcher[int, int], first: int, waves: list[list[int]]
    ) -> list[BaseException | int]:
        model.running.clear()
        head = asyncio.ensure_future(batcher.submit(first))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        queued = []
        for wave in waves:
            queued += [asyncio.ensure_future(batcher.submit(item)) for item in wave]
            await asyncio.sleep(0)
            clock.now += 0.15
        clock.now += 0.05
        left.update({1: clock.now, 2: clock.now} if first == 0 else {})
        model.hold.set()
        outcomes = list(await asyncio.gather(head, *queued, return_exceptions=True))
        model.hold.clear()
        return outcomes

    async def scenario() -> tuple[list[BaseException | int], list[BaseException | int]]:
        batcher = AdaptiveBatcher(model, max_batch_size=1, inline_below=0.0, left=left.get)
        giving_up = await held_then_queued(batcher, 0, [[1, 2, 3, 4], [5, 6, 7]])
        clock.now += LEAVING_WINDOW_SECONDS
        waiting = await held_then_queued(batcher, 10, [[11, 12, 13]])
        assert batcher.abandoned == 2
        batcher.close()
        return giving_up, waiting

    giving_up, waiting = asyncio.run(scenario())
    assert model.batches == [[0], [3], [4], [7], [6], [5], [10], [11], [12], [13]]
    assert [o if isinstance(o, int) else type(o) for o in giving_up] == [0, Abandoned, Abandoned, 6, 8, 10, 12, 14]
    assert waiting == [20, 22, 24, 26]


def test_when_every_waiting_caller_has_left_no_batch_runs_and_the_batcher_goes_idle() -> None:
    model = Model()
    model.hold.clear()

    async def scenario() -> int:
        batcher = AdaptiveBatcher(
            model, max_batch_size=4, inline_below=0.0, left=lambda item: 0.0 if item < 0 else None
        )
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        waiting = [asyncio.ensure_future(batcher.submit(item)) for item in (-2, -3)]
        await asyncio.sleep(0)
        model.hold.set()
        assert await first == 0
        for future in waiting:
            with pytest.raises(Abandoned):
                await future
        result = await batcher.submit(4)  # idle again: the next request runs at once, alone
        batcher.close()
        return result

    assert asyncio.run(scenario()) == 8
    assert model.batches == [[0], [4]]


def test_requests_their_batch_would_answer_after_their_callers_deadlines_are_refused_at_once() -> None:
    """Items are (value, deadline) here. The held first batch makes the batcher's recent batches (in the thread)
    at least 50 ms long, so the next batch is expected to end 50 ms on: an item whose deadline comes before that
    is refused as late with the reason ``late`` gave, the rest run, and so does an item without a deadline."""
    model = Model()
    model.hold.clear()
    refusals: list[float] = []

    def late(item: tuple[int, float | None], ends: float) -> str | None:
        deadline = item[1]
        if deadline is None or ends <= deadline:
            return None
        refusals.append(ends)
        return "would be answered too late"

    def run(items: Sequence[tuple[int, float | None]]) -> list[int]:
        return model([value for value, _ in items])

    async def scenario() -> list[BaseException | int]:
        batcher = AdaptiveBatcher(run, max_batch_size=4, inline_below=0.0, late=late)
        first = asyncio.ensure_future(batcher.submit((0, None)))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        await asyncio.sleep(0.05)  # the held batch, and so the batcher's idea of a batch, takes 50 ms at least
        now = time.perf_counter()
        rest = [
            asyncio.ensure_future(batcher.submit(item))
            for item in ((1, now + 0.001), (2, None), (3, now + 3600.0), (4, now + 0.002))
        ]
        await asyncio.sleep(0)
        model.hold.set()
        outcomes = list(await asyncio.gather(first, *rest, return_exceptions=True))
        assert (batcher.late, batcher.abandoned) == (2, 0)
        batcher.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert model.batches == [[0], [2, 3]]
    assert [o if isinstance(o, int) else type(o) for o in outcomes] == [0, Late, 4, 6, Late]
    assert all(
        isinstance(o, Late) and o.reason == "would be answered too late" for o in outcomes if not isinstance(o, int)
    )


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


def test_a_halted_batcher_fails_the_batch_in_its_thread_and_those_waiting_and_refuses_the_rest() -> None:
    model = Model()
    model.hold.clear()

    async def scenario() -> list[BaseException | int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=0.0)
        running = asyncio.ensure_future(batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        assert batcher.running_since is not None
        waiting = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        batcher.halt("did not answer in time")
        outcomes = list(await asyncio.gather(running, waiting, return_exceptions=True))
        with pytest.raises(Halted, match="did not answer in time"):
            await batcher.submit(2)
        model.hold.set()  # the stuck batch ends after all: its answers are nobody's now
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [type(outcome) for outcome in outcomes] == [Halted, Halted]
    assert all(isinstance(o, Halted) and o.reason == "did not answer in time" for o in outcomes)
    assert model.batches == [[0]]


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        AdaptiveBatcher(Model(), max_batch_size=0)


class Recorder:
    """Records which thread ran each batch."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.batches: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.threads.append(threading.current_thread().name)
        self.batches.append(list(items))
        return [item + 1 for item in items]


def test_a_lone_request_to_a_quick_model_runs_on_the_event_loop() -> None:
    model = Recorder()

    async def scenario() -> AdaptiveBatcher[int, int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0)
        assert [await batcher.submit(item) for item in (1, 2, 3)] == [2, 3, 4]
        batcher.close()
        return batcher

    batcher = asyncio.run(scenario())
    loop_thread = threading.current_thread().name
    assert model.threads == [loop_thread] * 3  # the first is the loop's trial, the others follow from it
    assert (batcher.inline, batcher.batches, len(batcher.inline_seconds)) == (3, 3, 3)


def test_a_slow_model_never_runs_on_the_event_loop() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=0.0)
        for item in range(3):
            await batcher.submit(item)
        batcher.close()

    asyncio.run(scenario())
    assert all(name.startswith("esteira-batch") for name in model.threads)


def test_requests_read_in_the_same_turn_of_the_loop_go_together_even_to_a_quick_model() -> None:
    model = Recorder()

    async def scenario() -> list[int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0)
        await batcher.submit(0)  # now known to be quick
        results = await asyncio.gather(*(batcher.submit(item) for item in (1, 2, 3)))
        batcher.close()
        return list(results)

    assert asyncio.run(scenario()) == [2, 3, 4]
    assert model.batches == [[0], [1, 2, 3]]


def test_a_queue_longer_than_a_batch_runs_on_the_loop_batch_after_batch_answering_each_before_the_next() -> None:
    """Between two batches on the loop, the first batch's callers get their answers."""
    model = Recorder()
    answered: list[int] = []

    async def caller(batcher: AdaptiveBatcher[int, int], item: int) -> None:
        answered.append(await batcher.submit(item))

    async def scenario() -> list[list[int]]:
        batcher = AdaptiveBatcher(model, max_batch_size=3, inline_below=60.0)
        await batcher.submit(0)  # now known to be quick
        seen: list[list[int]] = []
        original = model.__call__

        def run(items: Sequence[int]) -> list[int]:
            seen.append(list(answered))  # who was answered when this batch started
            return original(items)

        batcher.run_batch = run
        await asyncio.gather(*(caller(batcher, item) for item in range(1, 8)))
        batcher.close()
        return seen

    seen = asyncio.run(scenario())
    loop_thread = threading.current_thread().name
    assert model.threads == [loop_thread] * 4
    assert model.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert seen == [[], [2, 3, 4], [2, 3, 4, 5, 6, 7]]
    assert sorted(answered) == list(range(2, 9))


def test_a_caller_that_leaves_while_the_batcher_looks_for_company_does_not_wedge_it() -> None:
    model = Recorder()

    async def scenario() -> int:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0)
        await batcher.submit(0)
        leaving = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)  # it is now waiting for company
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        result = await asyncio.wait_for(batcher.submit(2), 10)  # a wedged batcher never answers
        batcher.close()
        return result

    assert asyncio.run(scenario()) == 3


def test_one_slow_lone_batch_does_not_keep_a_quick_model_off_the_event_loop() -> None:
    """The estimate is the fastest recent lone batch on the loop: an outlier (a collection, a preempted process)
    is ignored."""
    model = Recorder()

    async def scenario() -> AdaptiveBatcher[int, int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=0.5)
        batcher.inline_seconds.extend([0.01, 30.0])  # one quick lone batch, then a very slow one
        await batcher.submit(1)
        batcher.close()
        return batcher

    batcher = asyncio.run(scenario())
    assert model.threads == [threading.current_thread().name]
    assert batcher.inline == 1


def test_a_model_slow_on_the_loop_leaves_it_and_is_tried_there_again_now_and_then() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=0.5)
        batcher.inline_seconds.extend([2.0, 3.0, 1.5])
        for item in range(PROBE_EVERY):
            await batcher.submit(item)
        batcher.close()

    asyncio.run(scenario())
    in_thread = [name.startswith("esteira-batch") for name in model.threads]
    assert in_thread == [True] * (PROBE_EVERY - 1) + [False]


def test_a_batch_in_the_thread_is_answered_before_a_probe_batch_runs_on_the_loop() -> None:
    """The batch after one in the thread may be a probe on the loop: its callers were woken only after the probe,
    their answers held for a batch they were not in."""
    answered: list[int] = []
    seen: list[list[int]] = []  # who had been answered when each batch began
    first_running, release_first = threading.Event(), threading.Event()

    def run(items: Sequence[int]) -> list[int]:
        seen.append(list(answered))
        if items == [1]:
            first_running.set()
            release_first.wait(10)
        return list(items)

    async def caller(batcher: AdaptiveBatcher[int, int], item: int) -> None:
        answered.append(await batcher.submit(item))

    async def scenario() -> None:
        batcher = AdaptiveBatcher(run, max_batch_size=8, inline_below=0.5)
        batcher.inline_seconds.append(2.0)  # slow on the loop: batches go to the thread ...
        batcher._since_probe = PROBE_EVERY - 2  # ... and the one after the next is tried on the loop
        first = asyncio.ensure_future(caller(batcher, 1))
        await asyncio.get_running_loop().run_in_executor(None, first_running.wait, 10)
        second = asyncio.ensure_future(caller(batcher, 2))
        await asyncio.sleep(0)
        release_first.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert batcher.inline == 1  # the second batch was the probe
        batcher.close()

    asyncio.run(scenario())
    assert seen == [[], [1]]


def test_a_lone_request_to_an_idle_quick_model_is_refused_as_a_queued_one_would_be() -> None:
    """Past its caller's deadline, or with its caller gone, a request is not run even when nothing else waits."""
    model = Recorder()

    def late(item: int, ends: float) -> str | None:
        return "past its deadline" if item < 0 else None

    def left(item: int) -> float | None:
        return time.perf_counter() if item == 100 else None

    async def scenario() -> AdaptiveBatcher[int, int]:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0, left=left, late=late)
        assert await batcher.submit(1) == 2  # the model is now known to be quick: lone requests take the idle path
        with pytest.raises(Late, match="past its deadline"):
            await batcher.submit(-1)
        with pytest.raises(Abandoned):
            await batcher.submit(100)
        assert await asyncio.wait_for(batcher.submit(2), 10) == 3  # and the batcher still serves
        batcher.close()
        return batcher

    batcher = asyncio.run(scenario())
    assert model.batches == [[1], [2]]
    assert (batcher.late, batcher.abandoned) == (1, 1)


def test_a_model_far_too_slow_in_the_thread_is_not_tried_on_the_loop() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=0.5)
        batcher.thread_seconds.append(PROBE_CEILING * 0.5 + 1.0)
        await batcher.submit(1)
        batcher.close()

    asyncio.run(scenario())
    assert model.threads[0].startswith("esteira-batch")


def test_the_poll_window_grows_when_a_longer_poll_would_have_caught_the_next_request_and_shrinks_when_in_vain() -> None:
    window = PollWindow(limit=200e-6)
    assert window.window == 0.0  # no poll before callers show they come back quickly
    window.observe(500e-6)  # later than the limit: polling would not have helped
    assert window.window == 0.0
    window.observe(40e-6)  # within the limit, after a window of zero
    assert window.window == POLL_START_SECONDS
    window.observe(40e-6)
    assert window.window == 2 * POLL_START_SECONDS
    window.observe(40e-6)  # caught: the window stays
    assert window.window == 2 * POLL_START_SECONDS
    for _ in range(10):
        window.observe(190e-6)
    assert window.window == 200e-6  # grown to the limit, never past it
    window.observe(1.0)  # a poll in vain: halved
    assert window.window == 100e-6
    for _ in range(10):
        window.observe(1.0)
    assert window.window == 0.0  # below the smallest window it stops polling


def test_without_an_idle_poll_the_window_never_opens() -> None:
    window = PollWindow(limit=0.0)
    for gap in (0.0, 1e-6, 1.0):
        window.observe(gap)
        assert window.window == 0.0


def test_after_a_lone_request_the_loop_polls_for_the_window_without_blocking_it_then_sleeps() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0, idle_poll=1.0)
        batcher.poll.window = 0.05
        began = asyncio.get_running_loop().time()
        assert await batcher.submit(1) == 2
        assert batcher.polling
        assert await batcher.submit(2) == 3  # the loop still serves while it polls; the arrival ends that poll
        await until(lambda: not batcher.polling)
        elapsed = asyncio.get_running_loop().time() - began
        assert elapsed >= 0.05
        assert 0.05 <= batcher.poll_seconds <= elapsed  # the second request's whole window, and a bit of the first's
        turns = batcher.poll_turns
        assert turns > 1
        await asyncio.sleep(0.01)
        assert batcher.poll_turns == turns  # asleep after the window
        batcher.close()

    asyncio.run(scenario())


def test_no_poll_after_a_batch_of_several_requests_or_without_a_window_and_a_request_ends_a_poll() -> None:
    model = Recorder()

    async def scenario() -> None:
        batcher = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0, idle_poll=1.0)
        batcher.poll.window = 0.05
        await batcher.submit(0)
        await until(lambda: not batcher.polling)
        assert await asyncio.gather(*(batcher.submit(item) for item in (1, 2, 3))) == [2, 3, 4]
        assert not batcher.polling  # several callers: a polling loop would read each request as it lands
        batcher.poll.window = 60.0
        await batcher.submit(4)
        assert batcher.polling
        batcher.poll.window, batcher.poll.limit = 0.0, 0.0  # no poll after the next request
        await batcher.submit(5)
        await until(lambda: not batcher.polling, within=5.0)  # the request ended the minute-long poll
        quiet = AdaptiveBatcher(model, max_batch_size=8, inline_below=60.0)
        await quiet.submit(4)
        assert not quiet.polling and quiet.poll_turns == 0 and quiet.poll_seconds == 0.0
        batcher.close()
        quiet.close()

    asyncio.run(scenario())


def test_answered_runs_after_a_batch_of_several_is_handed_over_and_its_turn_ends_before_the_next_batch() -> None:
    model = Model()
    resumed: list[int] = []
    at_turn_end: list[tuple[list[int], int]] = []  # (callers resumed, batches run) when a turn held by answered ends

    async def caller(batcher: AdaptiveBatcher[int, int], item: int) -> int:
        result = await batcher.submit(item)
        resumed.append(item)
        return result

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        def answered() -> None:
            loop.call_soon(lambda: at_turn_end.append((sorted(resumed), len(model.batches))))

        batcher = AdaptiveBatcher(model, max_batch_size=3, inline_below=60.0, answered=answered)
        await asyncio.gather(*(caller(batcher, item) for item in range(5)))  # all read in one turn
        await caller(batcher, 9)  # a lone request: nothing to send together
        batcher.close()

    asyncio.run(scenario())
    assert model.batches == [[0, 1, 2], [3, 4], [9]]
    assert at_turn_end == [([0, 1, 2], 1), ([0, 1, 2, 3, 4], 2)]
