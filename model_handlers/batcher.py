"""Adaptive dynamic batching: a request that finds the model idle runs at once; requests that arrive while a
batch runs wait for it and go together in the next one (up to ``max_batch_size``).

Why not a fixed delay (TorchServe's ``maxBatchDelay``): a lone caller would wait the whole delay for company
that never comes. Here the only wait is the batch already running, so batches grow with load by themselves
(as Triton's and BentoML's adaptive batchers do) and c=1 costs what unbatched serving costs.

Batches run in one worker thread, so the event loop keeps accepting requests while the model computes. One
exception: a lone request to a model whose batches take less than ``inline_below`` seconds runs on the event
loop itself. Handing it to the thread and back (two wake-ups and two hand-overs of the GIL) costs a few hundred
microseconds on a busy machine, more than such a model's whole forward pass; blocking the loop for a couple of
milliseconds costs nobody anything (a request read meanwhile would have waited for the running batch anyway).
Requests that arrived in the same turn of the loop still go together. The line is 2 ms, not 1: with inference
logging on, a tabular batch of one takes 0.5-1 ms on a busy 2-core machine, and the logger's thread holding
the GIL stretches some of them past 1 ms.

What "takes less" means: the fastest of the last ``LONE_WINDOW`` lone batches run on the loop. The minimum, so
one outlier (a collection, a preempted process) does not move a quick model off the loop, while a model whose
every batch is slow leaves it within ``LONE_WINDOW`` batches. Only batches run on the loop count: the same lone
batch handed to the worker thread measured two to three times as long (a cold core, the hand-over), and judged
by those the loop would never be tried again. So the loop is tried: by the first lone request, and once every
``PROBE_EVERY`` lone requests while the loop's own figures say no, unless lone batches in the thread take over
``PROBE_CEILING`` times ``inline_below`` (a model that slow never blocks the loop to be measured).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
INLINE_BELOW_SECONDS = 0.002
LONE_WINDOW = 16  # batches of one request whose durations are remembered, on the loop and in the thread
PROBE_EVERY = 100
PROBE_CEILING = 10.0


class AdaptiveBatcher(Generic[Item, Result]):
    """Runs ``run_batch`` on lists of queued items, one batch at a time."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], list[Result]],
        max_batch_size: int,
        inline_below: float = INLINE_BELOW_SECONDS,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.inline_below = inline_below
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-batch")
        self.batches = 0  # batches run and the requests they carried: their ratio is the mean batch size
        self.batched = 0
        self.inline = 0  # batches run on the event loop
        self.inline_seconds: deque[float] = deque(maxlen=LONE_WINDOW)  # recent lone batches on the loop
        self.thread_seconds: deque[float] = deque(maxlen=LONE_WINDOW)  # recent lone batches in the thread
        self._since_probe = 0

    async def submit(self, item: Item) -> Result:
        """The result for ``item``; raises what ``run_batch`` raised for its batch."""
        if self._busy or self._waiting or not self._quick():
            return await self._enqueue(item)
        self._busy = True
        try:
            await asyncio.sleep(0)  # callers whose requests were read in this same turn of the loop queue meanwhile
        except asyncio.CancelledError:  # this caller left: those who queued meanwhile still need a batch
            self._hand_over()
            raise
        if self._waiting:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            self._waiting.insert(0, (item, future))
            self._hand_over()
            return await future
        try:
            self.inline += 1
            return self._timed([item], self.inline_seconds)[0]
        finally:
            self._busy = False

    def _hand_over(self) -> None:
        """Queued callers get the worker thread; with none, the batcher is idle again."""
        if self._waiting:
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    def _quick(self) -> bool:
        """Whether a lone request runs on the loop (see the module's docstring)."""
        if self.inline_below <= 0:
            return False
        if self.inline_seconds and min(self.inline_seconds) < self.inline_below:
            return True
        self._since_probe += 1
        if self.inline_seconds and self._since_probe < PROBE_EVERY:
            return False
        self._since_probe = 0
        return not self.thread_seconds or min(self.thread_seconds) < PROBE_CEILING * self.inline_below

    async def _enqueue(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _timed(self, batch: Sequence[Item], lone: deque[float]) -> list[Result]:
        """``run_batch``, the duration of a batch of one going to ``lone``."""
        started = time.perf_counter()
        self.batches, self.batched = self.batches + 1, self.batched + len(batch)
        try:
            return self.run_batch(batch)
        finally:
            if len(batch) == 1:
                lone.append(time.perf_counter() - started)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.max_batch_size], self._waiting[self.max_batch_size :]
                try:
                    items = [item for item, _ in batch]
                    results = await loop.run_in_executor(self._executor, self._timed, items, self.thread_seconds)
                except Exception as error:  # every caller of this batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy = False

    def close(self) -> None:
        self._executor.shutdown(wait=True)
