"""A stand-in for model servers' metrics: plays stable and canary traffic with chosen errors, latency and
prediction mix, and exposes it in the series Esteira's handlers export, for a real Prometheus to scrape."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

from model_handlers.metrics import SERVER_DURATION_BUCKETS, SERVER_REQUEST_DURATION, Outcome

LABELS = ["namespace", "ModelName", "Revision"]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class ArmProfile:
    """How one revision behaves: share of server errors, typical latency, class mix."""

    error_rate: float = 0.0
    latency: float = 0.02
    classes: dict[str, float] = field(
        default_factory=lambda: {"setosa": 1 / 3, "versicolor": 1 / 3, "virginica": 1 / 3}
    )


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class ModelExporter:
    """Generates traffic for (namespace, model, revision) arms at `rate` requests/s split by `weights`."""

    def __init__(self, namespace: str, model: str, rate: float = 100.0, seed: int = 1) -> None:
        self.namespace, self.model, self.rate = namespace, model, rate
        self.weights: dict[int, float] = {}  # revision -> share of traffic (0-1)
        self.profiles: dict[int, ArmProfile] = {}
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter("esteira_requests", "", [*LABELS, "outcome"], registry=self.registry)
        self.duration = Histogram(
            "esteira_request_duration_seconds", "", LABELS, buckets=BUCKETS, registry=self.registry
        )
        self.server_duration = Histogram(
            SERVER_REQUEST_DURATION, "", LABELS, buckets=SERVER_DURATION_BUCKETS, registry=self.registry
        )
        self.predictions = Counter("esteira_predictions", "", [*LABELS, "class"], registry=self.registry)
        self._stop = threading.Event()
        self._server = make_server("127.0.0.1", 0, make_wsgi_app(self.registry), handler_class=_Quiet)
        self.port = self._server.server_port
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._generate, daemon=True),
        ]

    def set_arm(self, revision: int, weight: float, profile: ArmProfile | None = None) -> None:
        with self._lock:
            self.weights[revision] = weight
            if profile is not None or revision not in self.profiles:
                self.profiles[revision] = profile or ArmProfile()
            labels = (self.namespace, self.model, str(revision))
            for outcome in Outcome:  # at zero from the start, as Esteira's handlers publish them at load
                self.requests.labels(*labels, outcome.value)
            for label in self.profiles[revision].classes:  # likewise every class the model knows
                self.predictions.labels(*labels, label)

    def _generate(self, tick: float = 0.1) -> None:
        while not self._stop.wait(tick):
            with self._lock:
                arms = [(rev, w, self.profiles[rev]) for rev, w in self.weights.items() if w > 0]
            for revision, weight, profile in arms:
                labels = (self.namespace, self.model, str(revision))
                expected = self.rate * weight * tick
                count = int(expected) + (1 if self._random.random() < expected - int(expected) else 0)
                for _ in range(count):
                    failed = self._random.random() < profile.error_rate
                    self.requests.labels(*labels, "server_error" if failed else "ok").inc()
                    handled = profile.latency * self._random.uniform(0.8, 1.2)
                    self.duration.labels(*labels).observe(handled)
                    self.server_duration.labels(*labels).observe(handled * 1.1)  # and its wait in the queue
                    if not failed:
                        label = self._random.choices(list(profile.classes), list(profile.classes.values()))[0]
                        self.predictions.labels(*labels, label).inc()

    def start(self) -> ModelExporter:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
