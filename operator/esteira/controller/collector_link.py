"""The operator's link to Esteira's collector: where handlers send records by default, and where every
decision is recorded as an audit trail that outlives Kubernetes Events.

Configured by environment (the chart sets them when the collector is installed): ESTEIRA_COLLECTOR_URL and
ESTEIRA_COLLECTOR_TOKEN, or ESTEIRA_COLLECTOR_TOKEN_FILE naming a file that holds the token. Posting never
holds a reconcile: each batch of decisions is sent by a background task with retries and backoff, and a
bounded number of batches wait; past that the oldest is dropped and logged (Events still carry every
decision).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from esteira.vocabulary import (
    COLLECTOR_AUDIT_PATH,
    ENV_COLLECTOR_TOKEN,
    ENV_COLLECTOR_TOKEN_FILE,
    ENV_COLLECTOR_URL,
    Decision,
)

logger = logging.getLogger(__name__)
MAX_WAITING = 1000
ATTEMPTS = 6
OPERATOR_ACTOR = "esteira-operator"
# The command annotation carries no requester: whoever could patch the ModelDeployment wrote it.
ANNOTATION_REQUESTER = "unknown (annotation)"


@dataclass(frozen=True)
class Asked:
    """Who asked for the command a reconcile took, through which path, and what came of it."""

    action: str
    requested_by: str
    outcome: str  # Done or Ignored
    via: str | None = None  # "RolloutCommand NAME"; None for the annotation

    def decision(self) -> Decision:
        """The Event (and audit entry) saying who asked."""
        via = f" ({self.via})" if self.via else ""
        return Decision("CommandReceived", f"{self.action} requested by {self.requested_by}{via}: {self.outcome}")

    def audit_fields(self) -> dict[str, object]:
        details = {"action": self.action, "requestedBy": self.requested_by, "outcome": self.outcome}
        return {"actor": self.requested_by, "details": {**details, "via": self.via or "annotation"}}


@dataclass
class CollectorLink:
    url: str | None = None
    token: str | None = None
    _waiting: deque[list[dict[str, object]]] = field(default_factory=lambda: deque(maxlen=MAX_WAITING))
    _sender: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_env(cls) -> CollectorLink:
        """The token from ESTEIRA_COLLECTOR_TOKEN_FILE (a mounted Secret, as the chart does) or the environment."""
        token_file = os.environ.get(ENV_COLLECTOR_TOKEN_FILE)
        token = Path(token_file).read_text().strip() if token_file else os.environ.get(ENV_COLLECTOR_TOKEN)
        return cls(os.environ.get(ENV_COLLECTOR_URL) or None, token or None)

    def record(self, namespace: str, name: str, decisions: Sequence[Decision], asked: Asked | None = None) -> None:
        """Queue the decisions for the audit trail; returns at once. `asked`'s decision names who asked."""
        if not self.url or not decisions:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if len(self._waiting) == self._waiting.maxlen:
            logger.warning("audit trail: %d batches waiting for the collector; dropping the oldest", MAX_WAITING)
        entry = {"namespace": namespace, "deployment": name, "actor": OPERATOR_ACTOR, "time": now}
        command = asked.decision() if asked else None
        self._waiting.append(
            [
                {**entry, "id": uuid.uuid4().hex, "reason": d.reason, "message": d.message, "warning": d.warning}
                | (asked.audit_fields() if asked and d == command else {})
                for d in decisions
            ]
        )  # each entry's id goes with it on every retry: a post whose answer was lost is not stored twice
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_all())
        self._wake.set()

    async def _send_all(self) -> None:
        """Post every waiting batch; a batch recorded while the session closes is posted too (this sender was not
        yet done then, so no other was started, and the batch waited for the next decision)."""
        while self._waiting:
            await self._send_session()

    async def _send_session(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), headers=headers) as session:
            while self._waiting:
                batch = self._waiting[0]
                if await self._post(session, batch):
                    self._waiting.popleft()
                else:
                    logger.warning("audit trail: collector unreachable; %d batches wait", len(self._waiting))
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=30)

    async def _post(self, session: aiohttp.ClientSession, batch: list[dict[str, object]]) -> bool:
        assert self.url is not None
        for attempt in range(ATTEMPTS):
            try:
                async with session.post(self.url.rstrip("/") + COLLECTOR_AUDIT_PATH, json=batch) as response:
                    if response.status < 300 or response.status == 422:  # 422 will not get better by retrying
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.0))
        return False

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
