"""CloudEvents to the retraining webhook: structured JSON, a few quick retries, a clear error that says whether
sending it later may help (the planner sends it again, with a longer backoff, at a later reconcile)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)
# Few and short: a delivery holds its ModelDeployment's reconciles (rollout ticks too) while it lasts, and the
# planner sends an event that failed again later, with a backoff in minutes.
ATTEMPTS = 2
FIRST_DELAY = 0.5  # seconds, doubled after each failure
TIMEOUT = aiohttp.ClientTimeout(total=5)
# Answers that say "not now" rather than "never": a timeout at the server, and too many requests.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})


class WebhookFailed(Exception):
    """The webhook did not accept the event; the message says why, ``final`` whether it refused it for good."""

    def __init__(self, message: str, final: bool) -> None:
        super().__init__(message)
        self.final = final


async def post_cloud_event(url: str, event: dict[str, Any]) -> None:
    """POST one structured-mode CloudEvent; 2xx is success, a 4xx (but 408 and 429) is final, the rest retried."""
    delay, last, final = FIRST_DELAY, "", False
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with session.post(
                    url, json=event, headers={"Content-Type": "application/cloudevents+json"}
                ) as answer:
                    if answer.status < 300:
                        return
                    last = f"HTTP {answer.status}: {(await answer.text())[:200]}"
                    if answer.status < 500 and answer.status not in RETRYABLE_CLIENT_ERRORS:
                        final = True
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS:
                logger.warning("retraining webhook attempt %d failed (%s); retrying", attempt, last)
                await asyncio.sleep(delay)
                delay *= 2
    raise WebhookFailed(f"the retraining webhook did not accept event {event.get('id')}: {last}", final)
