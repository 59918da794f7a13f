"""Traffic that follows the operator's split, played into an exporter, and the timeline it saw."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.support.cluster import Esteira
from tests.support.model_exporter import ArmProfile, ModelExporter


@dataclass
class Timeline:
    """What the test saw of the rollout, sampled from the ModelDeployment's status."""

    samples: list[tuple[float, int | None, int | None, str | None]] = field(default_factory=list)
    copies_seen: int = 0  # samples in which the canary got copies of stable's requests (rollout.mirror)

    def canary_weights(self) -> list[int]:
        weights: list[int] = []
        for _, _, weight, _ in self.samples:
            if weight is not None and (not weights or weights[-1] != weight):
                weights.append(weight)
        return weights

    def first_traffic(self) -> float | None:
        return next((t for t, _, w, _ in self.samples if w), None)


class TrafficMirror:
    """Feeds the exporter the split the operator decided, as real callers would follow the router."""

    def __init__(
        self,
        esteira: Esteira,
        namespace: str,
        exporter: ModelExporter,
        profiles: dict[int, ArmProfile],
        name: str = "iris",
    ) -> None:
        self.esteira, self.namespace, self.exporter, self.profiles = esteira, namespace, exporter, profiles
        self.name = name
        self.timeline = Timeline()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                status = self.esteira.get_md(self.namespace, self.name).get("status") or {}
            except Exception:  # the API answers again on the next poll
                continue
            stable, canary = status.get("stable"), status.get("canary")
            weight = canary["weight"] if canary else 0
            copies = bool(canary and canary.get("copies") == "Sending")  # stable's every request, none its own
            for revision in list(self.exporter.weights):
                self.exporter.set_arm(revision, 0.0)
            if stable:
                self.exporter.set_arm(stable["revision"], (100 - weight) / 100, self.profiles.get(stable["revision"]))
            if canary:
                share = 1.0 if copies else weight / 100
                self.exporter.set_arm(canary["revision"], share, self.profiles.get(canary["revision"]))
            self.timeline.copies_seen += copies
            self.timeline.samples.append(
                (time.monotonic(), stable and stable["revision"], canary and canary["weight"], status.get("phase"))
            )

    def __enter__(self) -> TrafficMirror:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
