"""One way for tests to wait: poll a condition until it holds, and fail saying what never happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def eventually(
    probe: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.1,
    tolerate: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `probe` until it returns something truthy and return that; `tolerate` lists errors that mean
    "not yet" (an API answering 404 while an object is created). Fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except tolerate as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last  # type: ignore[no-any-return]
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def until(condition: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    """Let the running event loop work until ``condition`` holds (set by the loop's own callbacks and tasks)."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() >= deadline:
            raise Timeout(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.001)
