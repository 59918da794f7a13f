"""A stand-in for the KServe controller, for end-to-end tests against the API emulator only.

It watches InferenceServices through the official ``kubernetes`` client and, whenever one's
``metadata.generation`` is ahead of ``status.observedGeneration``, writes the ``/status`` that KServe
(v0.20, Knative mode) would write: URLs, conditions, predictor revisions and traffic, model status.
Tests steer it: :meth:`FakeKServe.fail` makes a named InferenceService fail to load its model,
:meth:`FakeKServe.recover` undoes that, and ``ready_delay`` keeps new revisions "deploying" for a while.
On a real cluster KServe itself does this job, so nothing here is used there.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
USER_AGENT = "fake-kserve"
Outcome = Literal["progressing", "ready", "failed"]
Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Failure:
    """Why a model fails to load; ``reason`` must be one of KServe's ``lastFailureInfo.reason`` values."""

    reason: str = "ModelLoadFailed"
    message: str = "failed to load the model (injected by the test)"


@dataclass
class _Revisions:
    """Revision bookkeeping of one InferenceService, as Knative keeps it for the predictor."""

    by_generation: dict[int, str] = field(default_factory=dict)
    latest_ready: str | None = None
    rolled_out: str | None = None
    previous_rolled_out: str | None = None


@dataclass(frozen=True)
class Patched:
    """One status write, kept so tests can wait for it."""

    namespace: str
    name: str
    generation: int
    outcome: Outcome


class FakeKServe:
    """Runs in two daemon threads (watcher and writer) until :meth:`stop` or the end of a ``with`` block."""

    def __init__(
        self,
        kubeconfig: Path | str,
        namespaces: Iterable[str] | None = None,
        *,
        ready_delay: float = 0.0,
        domain: str = "example.com",
    ) -> None:
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        self.ready_delay = ready_delay
        self.domain = domain
        self.errors: list[BaseException] = []
        self.patched: list[Patched] = []
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        client.user_agent = USER_AGENT  # never a fault-injection target
        self._api = kubernetes.client.CustomObjectsApi(client)
        self._failures: dict[tuple[str | None, str], Failure] = {}
        self._revisions: dict[str, _Revisions] = {}  # by uid
        self._due: list[tuple[float, int, Key, int, bool]] = []  # (when, seq, key, generation, final)
        self._scheduled: set[tuple[Key, int]] = set()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._threads = [
            threading.Thread(target=self._watch_loop, name="fake-kserve-watch", daemon=True),
            threading.Thread(target=self._write_loop, name="fake-kserve-write", daemon=True),
        ]

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------------------

    def fail(self, name: str, namespace: str | None = None, failure: Failure | None = None) -> None:
        """Make the named InferenceService (in any namespace when None) fail to load its model from now on."""
        self._failures[(namespace, name)] = failure or Failure()
        self._reconcile_now(name, namespace)

    def recover(self, name: str, namespace: str | None = None) -> None:
        """Let the named InferenceService load its model again (also lifts a ``fail`` given for any namespace)."""
        for key in [key for key in self._failures if key[1] == name and namespace in (None, key[0])]:
            del self._failures[key]
        self._failures.pop((None, name), None)
        self._reconcile_now(name, namespace)

    def wait_for(
        self,
        name: str,
        namespace: str,
        *,
        outcome: Outcome = "ready",
        generation: int | None = None,
        timeout: float = 10.0,
    ) -> Patched:
        """Block until a status with this outcome (and at least this generation) was written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in reversed(list(self.patched)):
                if (item.namespace, item.name, item.outcome) == (namespace, name, outcome) and (
                    generation is None or item.generation >= generation
                ):
                    return item
            time.sleep(0.02)
        raise TimeoutError(f"no {outcome!r} status for {namespace}/{name} within {timeout}s; errors: {self.errors}")

    # -- watching --------------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        resource_version: str | None = None
        while not self._stop.is_set():
            self._watch = kubernetes.watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": 1}
            if resource_version:
                kwargs["resource_version"] = resource_version
            try:
                for event in self._watch.stream(self._api.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs):
                    obj = event["object"]
                    resource_version = obj["metadata"].get("resourceVersion", resource_version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._consider(obj)
                    elif event["type"] == "DELETED":
                        self._forget(obj)
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None  # too old: start over from a fresh snapshot
                elif exc.status == 404:
                    time.sleep(0.1)  # the InferenceService CRD is not installed yet
                elif not self._stop.is_set():
                    self.errors.append(exc)
                    time.sleep(0.1)
            except Exception as exc:
                if not self._stop.is_set():
                    self.errors.append(exc)
                    time.sleep(0.1)

    def _consider(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if self.namespaces is not None and meta.get("namespace") not in self.namespaces:
            return
        if meta.get("deletionTimestamp"):
            return
        generation = int(meta.get("generation") or 1)
        observed = int((obj.get("status") or {}).get("observedGeneration") or 0)
        if generation > observed:
            self._schedule((meta["namespace"], meta["name"]), generation)

    def _forget(self, obj: dict[str, Any]) -> None:
        """A deleted object's name may come back as a new object starting again at generation 1."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._revisions.pop(obj["metadata"].get("uid", ""), None)
        with self._cond:
            self._scheduled = {item for item in self._scheduled if item[0] != key}

    def _schedule(self, key: Key, generation: int) -> None:
        with self._cond:
            if (key, generation) in self._scheduled:
                return
            self._scheduled.add((key, generation))
            now = time.monotonic()
            if self.ready_delay > 0:
                heapq.heappush(self._due, (now, next(self._seq), key, generation, False))
            heapq.heappush(self._due, (now + self.ready_delay, next(self._seq), key, generation, True))
            self._cond.notify_all()

    def _reconcile_now(self, name: str, namespace: str | None) -> None:
        """Re-write the status of already reconciled objects after a test changed their fate."""
        try:
            if namespace is not None:
                found = [
                    cast(
                        dict[str, Any], self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                    )
                ]
            else:
                listed = cast(dict[str, Any], self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL))
                items: list[dict[str, Any]] = listed["items"]
                found = [obj for obj in items if obj["metadata"]["name"] == name]
        except ApiException as exc:
            if exc.status == 404:
                return  # not created yet: the watcher applies the fate when it appears
            raise
        for obj in found:
            if self.namespaces is None or obj["metadata"]["namespace"] in self.namespaces:
                key = (obj["metadata"]["namespace"], name)
                with self._cond:
                    heapq.heappush(
                        self._due, (time.monotonic(), next(self._seq), key, obj["metadata"]["generation"], True)
                    )
                    self._cond.notify_all()

    # -- writing ---------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                wait = self._due[0][0] - time.monotonic() if self._due else 0.5
                if wait > 0:
                    self._cond.wait(min(wait, 0.5))
                    continue
                _, _, key, generation, final = heapq.heappop(self._due)
            try:
                self._write_status(key, generation, final)
            except Exception as exc:
                self.errors.append(exc)

    def _write_status(self, key: Key, generation: int, final: bool) -> None:
        namespace, name = key
        try:
            obj = cast(dict[str, Any], self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        if int(obj["metadata"].get("generation") or 1) != generation or obj["metadata"].get("deletionTimestamp"):
            return  # superseded: the newer generation has its own schedule
        failure = self._failures.get((namespace, name)) or self._failures.get((None, name))
        outcome: Outcome = "progressing" if not final else "failed" if failure else "ready"
        status = self._status(obj, outcome, failure)
        try:
            self._api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.patched.append(Patched(namespace, name, generation, outcome))

    def _status(self, obj: dict[str, Any], outcome: Outcome, failure: Failure | None) -> dict[str, Any]:
        """The status KServe reports for this object and outcome (see its CRD's status schema)."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
        revisions = self._revisions.setdefault(meta.get("uid", f"{namespace}/{name}"), _Revisions())
        latest = revisions.by_generation.setdefault(
            generation, f"{name}-predictor-{len(revisions.by_generation) + 1:05d}"
        )
        canary = (spec.get("predictor") or {}).get("canaryTrafficPercent")
        now = _now()

        if outcome == "ready":
            traffic = self._roll_out(revisions, latest, canary)
        else:
            traffic = [_traffic(revisions.rolled_out, 100, False, "prev")] if revisions.rolled_out else []
        serving = bool(traffic)
        ready = outcome == "ready"
        reason, message = {
            "ready": ("", ""),
            "progressing": ("Deploying", f"Revision {latest} is being deployed"),
            "failed": (failure.reason if failure else "", failure.message if failure else ""),
        }[outcome]
        cond_status = "True" if ready else "Unknown" if outcome == "progressing" else "False"
        conditions = [
            _condition("IngressReady", "True" if serving else "False", now),
            _condition("PredictorReady", cond_status, now, reason, message),
            _condition("Ready", cond_status, now, reason, message),
        ]
        model_status: dict[str, Any] = {
            "transitionStatus": {"ready": "UpToDate", "progressing": "InProgress", "failed": "BlockedByFailedLoad"}[
                outcome
            ],
            "states": {
                "activeModelState": "Loaded" if ready or revisions.rolled_out else "Pending",
                "targetModelState": {"ready": "Loaded", "progressing": "Loading", "failed": "FailedToLoad"}[outcome],
            },
        }
        if outcome == "failed" and failure is not None:
            model_status["lastFailureInfo"] = {
                "reason": failure.reason,
                "message": failure.message,
                "modelRevisionName": latest,
                "time": now,
            }
        predictor: dict[str, Any] = {
            "latestCreatedRevision": latest,
            "url": f"http://{name}-predictor.{namespace}.{self.domain}",
            "traffic": traffic,
        }
        for field_name, value in (
            ("latestReadyRevision", revisions.latest_ready),
            ("latestRolledoutRevision", revisions.rolled_out),
            ("previousRolledoutRevision", revisions.previous_rolled_out),
        ):
            if value:
                predictor[field_name] = value
        mode = (meta.get("annotations") or {}).get("serving.kserve.io/deploymentMode", "Knative")
        extra: dict[str, Any] = {}
        if spec.get("canary"):
            # Standard mode (KServe 0.20+): each named canary predictor reports its own readiness and share.
            extra["canaryStatuses"] = [
                {"name": arm["predictor"].get("name", ""), "ready": ready, "trafficPercent": arm["trafficPercent"]}
                for arm in spec["canary"]
            ]
        return {
            **extra,
            "observedGeneration": generation,
            "url": f"http://{name}.{namespace}.{self.domain}",
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
            "conditions": conditions,
            "components": {"predictor": predictor},
            "modelStatus": model_status,
            "deploymentMode": "Serverless" if mode == "Knative" else "RawDeployment",
        }

    @staticmethod
    def _roll_out(revisions: _Revisions, latest: str, canary: int | None) -> list[dict[str, Any]]:
        """Knative routing: a canary splits traffic with the last rolled-out revision, otherwise promote."""
        revisions.latest_ready = latest
        stable = revisions.rolled_out
        if canary is not None and stable and stable != latest:
            return [_traffic(latest, int(canary), True, "latest"), _traffic(stable, 100 - int(canary), False, "prev")]
        if stable != latest:
            revisions.previous_rolled_out, revisions.rolled_out = stable, latest
        return [_traffic(latest, 100, True, "latest")]


def _traffic(revision: str | None, percent: int, latest: bool, tag: str) -> dict[str, Any]:
    return {"revisionName": revision, "percent": percent, "latestRevision": latest, "tag": tag}


def _condition(kind: str, status: str, now: str, reason: str = "", message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": status, "lastTransitionTime": now}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
