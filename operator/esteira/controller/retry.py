"""Retrying calls to the API server with capped exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from esteira.controller.telemetry import API_RETRIES

T = TypeVar("T")
logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {409, 429, 500, 502, 503, 504}


class ApiError(Exception):
    """An API server answer other than success, with its HTTP status (0 when no answer came)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status in RETRYABLE_STATUS


class NameTaken(ApiError):
    """A create found its name held by an object this ModelDeployment does not own: no retry can help."""

    def __init__(self, message: str) -> None:
        super().__init__(409, message)

    @property
    def retryable(self) -> bool:
        return False


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    what: str,
    attempts: int = 6,
    base_delay: float = 0.1,
    max_delay: float = 5.0,
) -> T:
    """Run `call`, retrying retryable API errors; the last error propagates when attempts run out."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except ApiError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            API_RETRIES.inc()
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            logger.info("%s failed (%s), retry %d/%d in %.2fs", what, exc, attempt, attempts - 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
