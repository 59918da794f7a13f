"""Adaptive dynamic batching: a request that finds the model idle runs at once; requests that arrive while a
batch runs wait for it and go together in the next one (up to ``max_batch_size``).

Why not a fixed delay (TorchServe's ``maxBatchDelay``): a lone caller would wait the whole delay for company
that never comes. Here the only wait is the batch already running, so batches grow with load by themselves
(as Triton's and BentoML's adaptive batchers do) and c=1 costs what unbatched serving costs.
The model runs in one worker thread, so the event loop keeps accepting requests while it computes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class AdaptiveBatcher(Generic[Item, Result]):
    """Runs ``run_batch`` on lists of queued items, one batch at a time, in a worker thread."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], list[Result]], max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-batch")
        self.batches = 0  # batches run and the requests they carried: their ratio is the mean batch size
        self.batched = 0

    async def submit(self, item: Item) -> Result:
        """The result for ``item``; raises what ``run_batch`` raised for its batch."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.max_batch_size], self._waiting[self.max_batch_size :]
                self.batches, self.batched = self.batches + 1, self.batched + len(batch)
                try:
                    results = await loop.run_in_executor(self._executor, self.run_batch, [item for item, _ in batch])
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
