"""A stand-in for the KServe controller, for end-to-end tests against the API emulator only.

It watches InferenceServices through the official ``kubernetes`` client and, whenever one's
``metadata.generation`` is ahead of the last it acted on, writes the ``/status`` that KServe (v0.20) would write
in the object's mode (see ``kserve_status``): Knative revisions and traffic, or Standard-mode canary statuses;
URLs, conditions and model status in both. As KServe's, that status's ``observedGeneration`` is a child's (the
Knative Service's, the stable Deployment's), not the InferenceService's: what it acted on is kept here.
Tests steer it: :meth:`FakeKServe.fail` makes a named InferenceService fail to load its model,
:meth:`FakeKServe.recover` undoes that, and ``ready_delay`` keeps new revisions "deploying" for a while.
On a real cluster KServe itself does this job, so nothing here is used there.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from .kserve_status import Failure, History, Outcome, build_status

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
USER_AGENT = "fake-kserve"
Key = tuple[str, str]  # (namespace, name)


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
        self._revisions: dict[str, History] = {}  # by uid
        self._acted: dict[str, int] = {}  # by uid: the last generation given its final status
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
        key = (meta["namespace"], meta["name"])
        if generation > self._acted.get(meta.get("uid", ""), 0):
            self._schedule(key, generation)

    def _forget(self, obj: dict[str, Any]) -> None:
        """A deleted object's name may come back as a new object starting again at generation 1."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        self._revisions.pop(obj["metadata"].get("uid", ""), None)
        self._acted.pop(obj["metadata"].get("uid", ""), None)
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
        if final:
            self._acted[obj["metadata"].get("uid", "")] = generation
        self.patched.append(Patched(namespace, name, generation, outcome))

    def _status(self, obj: dict[str, Any], outcome: Outcome, failure: Failure | None) -> dict[str, Any]:
        """The status KServe reports for this object and outcome, in the object's deployment mode."""
        meta = obj["metadata"]
        history = self._revisions.setdefault(meta.get("uid", f"{meta['namespace']}/{meta['name']}"), History())
        return build_status(obj, outcome, failure, history, self.domain)


__all__ = ["Failure", "FakeKServe", "Outcome", "Patched"]
