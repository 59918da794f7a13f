"""Reconciles for work due before the next timer run.

A ModelDeployment is reconciled on its resync timer, and every few seconds while it rolls out. A plan says when its
next piece of time-based work is due (a drift evaluation, an analysis); when that comes sooner than the timer, one
reconcile is set for that moment. Without it a `monitoring.drift.interval` shorter than the resync interval was
evaluated only once per resync, and a `rollout.interval` shorter than the rollout tick once per tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from esteira.controller.retry import ApiError

logger = logging.getLogger(__name__)

Key = tuple[str, str]
# A wake is set only when it comes at least this much before the timer: a plan due just before the next timer run
# (an interval equal to the resync interval) is left to that run, which would otherwise follow a wake by moments.
SLACK_SECONDS = 2.0


class Wakes:
    """At most one pending wake per ModelDeployment; a newer plan's replaces it."""

    def __init__(self, resync_seconds: float, rollout_tick_seconds: float) -> None:
        self.resync_seconds = resync_seconds
        self.rollout_tick_seconds = rollout_tick_seconds
        self._pending: dict[Key, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    def set(self, key: Key, due_in: float | None, rolling_out: bool, run: Callable[[], Awaitable[None]]) -> bool:
        """Run ``run`` in ``due_in`` seconds when that comes before the timer would; True when a wake was set."""
        timer = self.rollout_tick_seconds if rolling_out else self.resync_seconds
        self.cancel(key)  # the newer plan's time stands, early or not
        if due_in is None or due_in + SLACK_SECONDS > timer:
            return False
        self._pending[key] = asyncio.get_running_loop().call_later(max(0.0, due_in), self._start, key, run)
        return True

    def pending(self, key: Key) -> bool:
        return key in self._pending

    def cancel(self, key: Key) -> None:
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _start(self, key: Key, run: Callable[[], Awaitable[None]]) -> None:
        del self._pending[key]
        task = asyncio.create_task(self._run(key, run))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _run(key: Key, run: Callable[[], Awaitable[None]]) -> None:
        """A failure is left to the timers, which come next: a wake is an early run, never the only one."""
        try:
            await run()
        except ApiError as exc:
            logger.info("early reconcile of %s/%s failed: %s", *key, exc)
        except Exception:
            logger.exception("early reconcile of %s/%s failed", *key)
