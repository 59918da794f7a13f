"""Adaptive dynamic batching: a request that finds the model idle runs at once; requests that arrive while a
batch runs wait for it and go together in the next one (up to ``max_batch_size``).

Why not a fixed delay (TorchServe's ``maxBatchDelay``): a lone caller would wait the whole delay for company
that never comes. Here the only wait is the batch already running, so batches grow with load by themselves
(as Triton's and BentoML's adaptive batchers do) and c=1 costs what unbatched serving costs.

Where a batch runs: on the event loop itself when the model is quick, else in one worker thread. Handing a
batch to a thread and back (two wake-ups, the GIL passed back and forth between two cores) cost more than a
small model's whole batch: on a 2-core machine esteira-kserve answered 40-70 % more requests at 32 callers, and
twice as many lone ones for the image model, with its batches on the loop. Blocking the loop for a quick batch
costs nobody anything: requests read meanwhile would have waited for the running batch anyway, and health
checks and scrapes wait for one batch of a model that has been quick. A slow model's batches go to the
thread, so the loop stays responsive; for those the hand-over is a small share of the batch. Between batches
run on the loop it turns once, so answers go out and new requests are read. Requests that arrived in the
same turn of the loop still go together.

What "quick" means: the fastest of the last ``WINDOW`` batches run on the loop took less than ``inline_below``
(10 ms). The minimum, so one outlier (a collection, a preempted process, a TorchScript model's first calls)
does not move a quick model off the loop, while a model whose every batch is slow leaves it within ``WINDOW``
batches. Only batches run on the loop count: the same batch in the worker thread measures two to three times
as long (a cold core, the hand-over), and judged by those the loop would never be tried again. So the loop is
tried: by the first batch, and once every ``PROBE_EVERY`` batches while its own figures say no, unless batches
in the thread take over ``PROBE_CEILING`` times ``inline_below`` (a model that slow never blocks the loop to be
measured).

When a batch of several has been handed to its callers, ``answered`` is called on the loop, after their wake-ups
are scheduled and before anything the batcher does next: esteira-kserve holds the batch's answers there and sends
them together (:mod:`model_handlers.coalesced`).

A batcher that was halted (:meth:`AdaptiveBatcher.halt`: its model did not answer in time, see
:mod:`model_handlers.watchdog`) refuses every request, and fails those it held, with :class:`Halted`. The queue
has no bound in requests: one was tried (TorchServe's ``job_queue_size``, 100) and callers that retry a refusal at
once kept the event loop refusing, so 256 of them got a sixth of the answers they got from a queue without one
(``benchmarks/README.md``).

A request whose caller has gone (``left``: when the caller closed its connection, None while it waits) is taken
out of its batch before the batch runs, and its caller's wait ends with :class:`Abandoned`: no answer can reach it.
Under more load than the model can serve, callers give up (a client's timeout, a proxy's) and come back with a new
request; a queue that ran every request it held would spend the model on answers nobody reads while the requests
still wanted wait behind them, and past the point where every request waits longer than its caller, serve no one.

A request that carries its caller's deadline (``late``: a proxy in front said when it gives up) and would be
answered after it, by the time the batch being made is expected to take (the fastest of the recent ones where it
will run), is refused with :class:`Late` instead of run: its caller hears at once that it cannot be served in
time, and the model's time goes to a request that can still be. Oldest first, a server past its capacity would
otherwise run, batch after batch, the requests whose callers were about to give up.

Batches are taken oldest first, or newest first while callers are giving up, a request that has waited longer
than the callers who left going ahead of the newest (:mod:`esteira.packaging.caller_queue`).

Polling when idle (``idle_poll``, off unless set): after a batch of one request the loop keeps turning for a
short window instead of sleeping in epoll, so the caller's next request finds a core that did not go to sleep.
A lone caller sends its next request tens of microseconds after its answer; on a virtual machine's 2 cores a
request that woke a sleeping core ran the handler at about half the speed it runs back to back
(:class:`PollWindow` sizes the window). Only after a lone request: with several callers, a loop that polls
reads each request as it lands, so fewer go together in a batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from esteira.packaging.caller_queue import CallerQueue

Item = TypeVar("Item")
Result = TypeVar("Result")
Waiting = tuple[Item, asyncio.Future[Result]]  # a queued item and its caller's future
INLINE_BELOW_SECONDS = 0.010
WINDOW = 16  # batches whose durations are remembered, on the loop and in the thread
PROBE_EVERY = 100
PROBE_CEILING = 10.0
POLL_START_SECONDS = 25e-6  # the first window, and the smallest: a shrinking window below it stops polling


class Refused(Exception):
    """A request the batcher will not run; ``reason`` says why, after the model's name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Halted(Refused):
    """The batcher runs nothing more (:meth:`AdaptiveBatcher.halt`)."""


class Abandoned(Exception):
    """The request's caller went away before its batch ran, so it was not run."""


class Late(Refused):
    """The request's batch would end after its caller's deadline, so it was not run."""


class PollWindow:
    """How long to poll after going idle, sized as Linux's haltpoll governor sizes a guest's poll before it halts:
    from zero, grown (doubled, from ``POLL_START_SECONDS``, up to ``limit``) when the next request came after the
    window but within ``limit``, so a longer poll would have caught it; halved when the next request came later
    than ``limit``, so the poll ran its whole window in vain. CPU spent polling is thus at most ``limit`` a
    request where callers come back quickly, and about twice the last window after each burst."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.window = 0.0

    def observe(self, gap: float) -> None:
        """The time from going idle to the next request."""
        if gap <= self.window:
            return
        if gap <= self.limit:
            self.window = min(self.limit, max(2 * self.window, POLL_START_SECONDS))
        else:
            self.window = self.window / 2 if self.window / 2 >= POLL_START_SECONDS else 0.0


class AdaptiveBatcher(Generic[Item, Result]):
    """Runs ``run_batch`` on lists of queued items, one batch at a time."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], list[Result]],
        max_batch_size: int,
        inline_below: float = INLINE_BELOW_SECONDS,
        idle_poll: float = 0.0,
        polled: Callable[[float], None] | None = None,
        answered: Callable[[], None] | None = None,
        left: Callable[[Item], float | None] | None = None,
        late: Callable[[Item, float], str | None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.halted: str | None = None  # why, once halted
        self.loop: asyncio.AbstractEventLoop | None = None  # where it runs, known from the first request
        self.running_since: float | None = None  # when the batch running now began (perf_counter)
        self._in_thread: list[Waiting[Item, Result]] = []  # the callers of the batch in the thread
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.inline_below = inline_below
        self._waiting: CallerQueue[Waiting[Item, Result]] = CallerQueue()
        self._busy = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="esteira-batch")
        self.batches = 0  # batches run and the requests they carried: their ratio is the mean batch size
        self.batched = 0
        self.inline = 0  # batches run on the event loop
        self.inline_seconds: deque[float] = deque(maxlen=WINDOW)  # recent batches on the loop
        self.thread_seconds: deque[float] = deque(maxlen=WINDOW)  # recent batches in the thread
        self._since_probe = 0
        self.poll = PollWindow(idle_poll)
        self.poll_turns = 0  # turns of the loop spent polling
        self.poll_seconds = 0.0  # time spent polling: its CPU cost
        self._polled = polled  # told each poll's seconds as it ends (a metric)
        self._answered = answered  # called on the loop once a batch of several has woken its callers
        self._left_at = left  # when a queued item's caller left (perf_counter), None while it waits
        self._late = late  # why a queued item would be answered too late, were its batch to end then (perf_counter)
        self.abandoned = 0  # queued items not run because their callers had left
        self.late = 0  # ... because they would have been answered after their callers' deadlines
        self.polling = False
        self._poll_until = 0.0
        self._poll_began: float | None = None
        self._idle_since: float | None = None
        self._last_batch = 0

    async def submit(self, item: Item) -> Result:
        """The result for ``item``; raises what ``run_batch`` raised for its batch, or :class:`Refused`."""
        if self.halted is not None:
            raise Halted(self.halted)
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        now = time.perf_counter()
        self._end_poll(now)  # a request ends the poll
        if self._idle_since is not None and not self._busy:
            self.poll.observe(now - self._idle_since)
            self._idle_since = None
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
            self._waiting.put_first((item, future), now)
            self._hand_over()
            return await future
        # What a queued item is refused for, a lone one is too: it ran though its caller's deadline had passed.
        later = time.perf_counter()
        refusal = self._refusal(item, now, later, later + min(self.inline_seconds, default=0.0))
        if refusal is not None:
            self._go_idle()
            raise refusal
        try:
            return self._on_loop([item])[0]
        finally:
            self._go_idle()

    def _hand_over(self) -> None:
        """Queued callers get a drain (on the loop or in the thread, batch by batch); with none, the batcher is idle."""
        if self._waiting:
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._go_idle()

    def _go_idle(self) -> None:
        """Nothing runs or waits: note when, and poll for the window after a lone request (see the module's
        docstring)."""
        self._busy = False
        self._idle_since = time.perf_counter()
        if self.poll.window <= 0 or self._last_batch != 1:
            return
        self._poll_until = self._idle_since + self.poll.window
        self._poll_began = self._idle_since
        if not self.polling:
            self.polling = True
            asyncio.get_running_loop().call_soon(self._poll_turn)

    def _poll_turn(self) -> None:
        """A ready callback: it makes the loop's next wait for events one that returns at once."""
        self.poll_turns += 1
        now = time.perf_counter()
        if now < self._poll_until:
            asyncio.get_running_loop().call_soon(self._poll_turn)
        else:
            self.polling = False
            self._end_poll(now)

    def _end_poll(self, now: float) -> None:
        self._poll_until = 0.0
        if self._poll_began is not None:
            seconds, self._poll_began = now - self._poll_began, None
            self.poll_seconds += seconds
            if self._polled is not None:
                self._polled(seconds)

    def _quick(self) -> bool:
        """Whether the next batch runs on the loop (see the module's docstring)."""
        if self.inline_below <= 0:
            return False
        if self.inline_seconds and min(self.inline_seconds) < self.inline_below:
            return True
        if self.inline_seconds and self._since_probe < PROBE_EVERY - 1:
            return False
        return not self.thread_seconds or min(self.thread_seconds) < PROBE_CEILING * self.inline_below

    def _on_loop(self, items: Sequence[Item]) -> list[Result]:
        self.inline += 1
        self._since_probe = 0
        return self._timed(items, self.inline_seconds)

    async def _enqueue(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.put((item, future), time.perf_counter())
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _timed(self, batch: Sequence[Item], durations: deque[float]) -> list[Result]:
        """``run_batch``, its duration going to ``durations``."""
        started = self.running_since = time.perf_counter()
        self.batches, self.batched = self.batches + 1, self.batched + len(batch)
        self._last_batch = len(batch)
        try:
            return self.run_batch(batch)
        finally:
            self.running_since = None
            durations.append(time.perf_counter() - started)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                on_loop = self._quick()
                batch = self._next_batch(self.inline_seconds if on_loop else self.thread_seconds)
                if not batch:
                    continue
                items = [item for item, _ in batch]
                try:
                    if on_loop:
                        results = self._on_loop(items)
                    else:
                        self._since_probe += 1
                        self._in_thread = batch
                        try:
                            results = await loop.run_in_executor(
                                self._executor, self._timed, items, self.thread_seconds
                            )
                        finally:
                            self._in_thread = []
                except Exception as error:  # every caller of this batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                if self._answered is not None and len(batch) > 1:
                    self._answered()
                if self._waiting:  # the answers go out and new requests are read before the next batch, even
                    await asyncio.sleep(0)  # after one in the thread: the next may run on the loop (a probe)
        finally:
            self._go_idle()

    def _next_batch(self, recent: deque[float]) -> list[Waiting[Item, Result]]:
        """Up to ``max_batch_size`` of the waiting items, in the queue's order, leaving out those whose callers
        have gone (each told :class:`Abandoned`) and those its batch would answer too late (:class:`Late`), the
        batch expected to take as long as the fastest of ``recent``."""
        now = time.perf_counter()
        ends = now + (min(recent) if recent else 0.0)

        def wanted(entry: Waiting[Item, Result], queued: float) -> bool:
            item, future = entry
            refusal = self._refusal(item, queued, now, ends, counted=not future.done())
            if refusal is None:
                return True
            if not future.done():
                future.set_exception(refusal)
            return False

        return self._waiting.take(self.max_batch_size, now, wanted)

    def _refusal(
        self, item: Item, queued: float, now: float, ends: float, counted: bool = True
    ) -> Abandoned | Late | None:
        """Why ``item``, queued at ``queued``, is not run in a batch ending at ``ends``: its caller has gone
        (:class:`Abandoned`) or would be answered after its deadline (:class:`Late`); None: it runs. ``counted``:
        the refusal is counted (not for an item whose caller has its answer already)."""
        left_at = None if self._left_at is None else self._left_at(item)
        if left_at is not None:
            if counted:
                self.abandoned += 1
                self._waiting.left(left_at - queued, now)
            return Abandoned()
        if self._late is not None and (reason := self._late(item, ends)) is not None:
            if counted:
                self.late += 1
            return Late(reason)
        return None

    def halt(self, reason: str) -> None:
        """Run nothing more: the callers of the batch in the thread, those waiting and those to come get
        :class:`Halted` with ``reason``. On the loop; the batch in the thread runs on, unanswered."""
        self.halted = reason
        held = [*self._in_thread, *self._waiting.clear()]
        for _, future in held:
            if not future.done():
                future.set_exception(Halted(reason))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
