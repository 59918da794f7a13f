"""What the watches last delivered of a ModelDeployment, its children and its retraining Jobs, so a resync or a
rollout tick that finds nothing to do reads nothing from the API server (an informer's cache, kept by Kopf's
indices).

Why: a resync is a full reconcile of every ModelDeployment each interval, and almost every one finds nothing
to do; read from the API server, each cost a GET and a LIST (34 calls a second at rest with 1,000
ModelDeployments). The watches already deliver every change to these objects, so the operator plans from what
they delivered. What it may not do is act on it: the moment a plan would change anything (a status, a child, a
Job, an Event, a command's outcome), they are read from the API server, and the plan is applied only when they
are the versions it was made from (else it is made again from what was read). So a stale cache can delay an
action by one tick, never cause one.

Every kind a router manages is watched and indexed (InferenceServices, and HTTPRoutes where the Gateway API is
installed), and so are retraining Jobs. A watch can miss a deletion (Kopf lists again after a broken watch, and
an object deleted in between leaves no event): so a ModelDeployment is read from the API server at least every
``full_read_seconds`` (see :class:`FullReads`), whatever the cache says.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esteira.routing import ObjectKey, key_of

FULL_READ_SECONDS = 600.0
Deployment = tuple[str, str]  # namespace, name


@dataclass(frozen=True)
class Observed:
    """What a reconcile plans from: a ModelDeployment, its children and its retraining Jobs (only when its spec
    asks for retraining), read from the API server or as the watches last delivered them."""

    md: dict[str, Any]
    children: dict[ObjectKey, dict[str, Any]]
    jobs: dict[str, dict[str, Any]]

    @classmethod
    def of(
        cls, md: Mapping[str, Any], children: Iterable[Mapping[str, Any]], jobs: Iterable[Mapping[str, Any]]
    ) -> Observed:
        """From the watches: copies, so a plan may use them freely."""
        owner = copy.deepcopy(dict(md))
        kids = [copy.deepcopy(dict(child)) for child in children]
        runs = [copy.deepcopy(dict(job)) for job in jobs] if retrains(owner) else []
        return cls(owner, {key_of(child): child for child in kids}, {job["metadata"]["name"]: job for job in runs})

    def matches(self, other: Observed) -> bool:
        """Whether ``other`` (read from the API server) holds the same versions of the same objects."""
        return (
            _version(self.md) == _version(other.md)
            and _versions(self.children) == _versions(other.children)
            and _versions(self.jobs) == _versions(other.jobs)
        )


def retrains(md: Mapping[str, Any]) -> bool:
    """Whether the ModelDeployment's spec asks for retraining (its Jobs are then part of what it plans from)."""
    return bool((md.get("spec") or {}).get("retraining"))


def child_entry(body: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    """A watched child as the index keeps it: the whole object, with the apiVersion and kind its watch is for
    when the object lacks them (as list items may)."""
    entry = copy.deepcopy(dict(body))
    entry.setdefault("apiVersion", api_version)
    entry.setdefault("kind", kind)
    return entry


class FullReads:
    """When each ModelDeployment is due to be read from the API server again: between half of ``seconds`` and
    ``seconds`` after its last read, drawn at random. Read together (all of them as the operator starts), they come
    due over several resyncs, not in one burst of reads at the same resync every ``seconds``."""

    def __init__(
        self,
        seconds: float = FULL_READ_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._rng = rng or random.Random()
        self._due_at: dict[Deployment, float] = {}

    def read(self, deployment: Deployment) -> None:
        self._due_at[deployment] = self._clock() + self.seconds * self._rng.uniform(0.5, 1.0)

    def due(self, deployment: Deployment) -> bool:
        due_at = self._due_at.get(deployment)
        return self.seconds <= 0 or due_at is None or self._clock() >= due_at

    def forget(self, deployment: Deployment) -> None:
        self._due_at.pop(deployment, None)


def _version(obj: Mapping[str, Any]) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _versions(objects: Mapping[Any, Mapping[str, Any]]) -> dict[Any, str | None]:
    return {key: _version(obj) for key, obj in objects.items()}
