"""esteira-kserve's response timeout: a batch that runs longer than the model's ``responseTimeout`` (``esteira
package --response-timeout``, the key TorchServe reads) ends the server process, so it restarts with a fresh
model, as TorchServe ends a worker that does not answer in time and starts another.

Why end the process: a Python thread cannot be stopped, so a model stuck in its batch holds the batcher's one
thread, and every request after it would wait for ever; a batch stuck on the event loop holds everything,
health checks included. The process exits non-zero: the kubelet restarts the container, and with several worker
processes the supervisor stops the others and exits too, so the pod restarts whole.

Before it goes, while the event loop is free (a batch in the thread), the callers of the stuck batch, those
waiting and those that come meanwhile get a 503 saying why (:meth:`model_handlers.batcher.AdaptiveBatcher.halt`),
and the inference records queued so far are sent (``flush``), within a few seconds each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0  # how often the running batch's age is read: a timeout is seconds at the least
ANSWER_SECONDS = 2.0  # how long the callers are given to be answered before the process ends
EXIT_STATUS = 70  # EX_SOFTWARE: the model, not the request or the environment, failed


class Watched(Protocol):
    """What the watchdog reads of an :class:`~model_handlers.batcher.AdaptiveBatcher`."""

    running_since: float | None
    loop: asyncio.AbstractEventLoop | None

    def halt(self, reason: str) -> None: ...


class Watchdog:
    """Watches ``batcher`` from a daemon thread; its callers are answered on the loop it runs on; ``flush`` runs
    before the process ends; ``exit`` ends it (:func:`end_process` unless given)."""

    def __init__(
        self,
        batcher: Watched,
        timeout: float,
        flush: Callable[[], None],
        exit: Callable[[int], None] | None = None,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.batcher = batcher
        self.timeout = timeout
        self.flush = flush
        self.exit = exit or end_process
        self.check_seconds = check_seconds

    def start(self) -> Watchdog:
        threading.Thread(target=self._watch, name="esteira-watchdog", daemon=True).start()
        return self

    def overdue(self) -> float | None:
        """How long the running batch has run, if past the timeout."""
        began = self.batcher.running_since
        seconds = None if began is None else time.perf_counter() - began
        return seconds if seconds is not None and seconds > self.timeout else None

    def _watch(self) -> None:
        while True:
            time.sleep(self.check_seconds)
            seconds = self.overdue()
            if seconds is not None:
                self.end(seconds)
                return

    def end(self, seconds: float) -> None:
        """Answer who can be answered, send the queued records, and end the process."""
        reason = f"did not answer a batch within its response timeout ({self.timeout:g} s); the server restarts"
        logger.error(
            "the model has run one batch for %.1f s, past its response timeout of %g s (responseTimeout): "
            "the server exits with status %d to be restarted with a fresh model",
            seconds,
            self.timeout,
            EXIT_STATUS,
        )
        answered = threading.Event()

        def halt(loop: asyncio.AbstractEventLoop) -> None:
            self.batcher.halt(reason)
            # The callers woke to their refusals in this turn; their answers are written in their next step,
            # which runs before a callback scheduled now, and that one schedules the signal after any they
            # scheduled in turn.
            loop.call_soon(loop.call_soon, answered.set)

        loop = self.batcher.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(halt, loop)
            answered.wait(ANSWER_SECONDS)  # a loop stuck in the batch never answers: go all the same
        try:
            self.flush()
        except Exception:
            logger.exception("sending the queued inference records failed")
        self.exit(EXIT_STATUS)


def end_process(status: int) -> None:
    """The log written out, then the process ended at once: a normal exit would wait for the stuck thread."""
    logging.shutdown()
    os._exit(status)
