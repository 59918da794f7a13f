"""CloudEvents to the retraining webhook: structured JSON, a few retries with backoff, a clear error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)
ATTEMPTS = 4
FIRST_DELAY = 0.5  # seconds, doubled after each failure
TIMEOUT = aiohttp.ClientTimeout(total=10)


class WebhookFailed(Exception):
    """The webhook did not accept the event after every attempt; the message says why."""


async def post_cloud_event(url: str, event: dict[str, Any]) -> None:
    """POST one structured-mode CloudEvent; 2xx is success, 4xx is final, 5xx and network errors are retried."""
    delay, last = FIRST_DELAY, ""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with session.post(
                    url, json=event, headers={"Content-Type": "application/cloudevents+json"}
                ) as answer:
                    if answer.status < 300:
                        return
                    last = f"HTTP {answer.status}: {(await answer.text())[:200]}"
                    if answer.status < 500:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS:
                logger.warning("retraining webhook attempt %d failed (%s); retrying", attempt, last)
                await asyncio.sleep(delay)
                delay *= 2
    raise WebhookFailed(f"the retraining webhook did not accept event {event.get('id')}: {last}")
