"""A small load generator for the demo and the tests: iris-like rows, a few concurrent clients.

The rows are drawn around each iris class's measured means and spreads (Fisher's data), one class in three,
so a model that confuses two classes shows up as a shift in the predicted-class distribution.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from esteira.vocabulary import REVISION_HEADER

# (mean, standard deviation) of sepal length, sepal width, petal length, petal width per class.
IRIS_CLASSES: tuple[tuple[tuple[float, float], ...], ...] = (
    ((5.006, 0.352), (3.428, 0.379), (1.462, 0.174), (0.246, 0.105)),
    ((5.936, 0.516), (2.770, 0.314), (4.260, 0.470), (1.326, 0.198)),
    ((6.588, 0.636), (2.974, 0.322), (5.552, 0.552), (2.026, 0.275)),
)


def iris_row(rng: random.Random) -> list[float]:
    features = rng.choice(IRIS_CLASSES)
    return [round(max(0.1, rng.gauss(mean, std)), 2) for mean, std in features]


def request_rows(path: Path | None) -> list[list[float]]:
    """Instances from a v1 request file (build/demo/requests/iris-v1.json), when there is one."""
    if path is None or not path.is_file():
        return []
    instances = json.loads(path.read_text()).get("instances", [])
    return [row for row in instances if isinstance(row, list)]


@dataclass
class LoadGenerator:
    """Posts v1 requests of `batch` rows to `url` from `clients` loops until stopped; counts the answers."""

    url: str
    model: str
    clients: int = 3
    batch: int = 8
    pause: float = 0.02
    seed: int = 7
    extra_rows: Sequence[list[float]] = ()
    statuses: Counter[int] = field(default_factory=Counter)
    revisions: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop.clear()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self._session = session
        self._tasks = [
            asyncio.create_task(self._client(session, random.Random(self.seed + i))) for i in range(self.clients)
        ]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()

    async def _client(self, session: aiohttp.ClientSession, rng: random.Random) -> None:
        endpoint = f"{self.url}/v1/models/{self.model}:predict"
        while not self._stop.is_set():
            rows = [
                list(rng.choice(self.extra_rows)) if self.extra_rows and rng.random() < 0.1 else iris_row(rng)
                for _ in range(self.batch)
            ]
            try:
                async with session.post(endpoint, json={"instances": rows}) as answer:
                    await answer.read()
                    self.statuses[answer.status] += 1
                    self.revisions[answer.headers.get(REVISION_HEADER, "?")] += 1
            except (aiohttp.ClientError, TimeoutError):
                self.statuses[0] += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.pause)
