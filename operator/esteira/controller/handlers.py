"""Kopf handlers. Each one is a thin trigger: the work happens in `Reconciler.reconcile`.

`register` wires them into a registry, so the resync interval is configurable and tests get a fresh one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from esteira import API_GROUP, API_VERSION, PLURAL
from esteira.api.command import COMMAND_PLURAL
from esteira.controller import telemetry
from esteira.controller.kube import connection_info
from esteira.controller.observed import Observed, child_entry
from esteira.controller.reconciler import Reconciler
from esteira.controller.retry import ApiError
from esteira.routing import child_kinds
from esteira.vocabulary import LABEL_DEPLOYMENT, LABEL_RETRAIN_RUN, format_time

logger = logging.getLogger(__name__)
MD = (API_GROUP, API_VERSION, PLURAL)
RETRY_DELAY = 5.0


def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep Kopf's bookkeeping in annotations under Esteira's prefix: the status schema is Esteira's own.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 60
    settings.posting.level = logging.WARNING


async def _reconcile_or_retry(memo: Any, namespace: str | None, name: str, watched: Observed | None = None) -> None:
    reconciler: Reconciler = memo.reconciler
    if namespace is None:
        return  # ModelDeployment is namespaced; Kopf always passes one
    try:
        await reconciler.reconcile(namespace, name, watched)
    except ApiError as exc:
        raise kopf.TemporaryError(f"API server: {exc}", delay=RETRY_DELAY) from exc


def _wake_when_due(memo: Any, namespace: str | None, name: str, watch: Callable[[], Observed | None]) -> None:
    """Set an early reconcile when the plan's next time-based work comes before the next timer run
    (:mod:`esteira.controller.wakes`); ``watch`` gives what the watches hold by then, so it plans without reading
    the API server. Only timers set one: they are spread over the interval, where the reconciles of watch events
    (every ModelDeployment resumed at start) come together, and would each have read the API server."""
    if namespace is None:
        return

    async def run() -> None:
        await memo.reconciler.reconcile(namespace, name, watch())
        _wake_when_due(memo, namespace, name, watch)

    memo.wakes.set((namespace, name), *(memo.reconciler.due(namespace, name) or (None, False)), run)


async def model_deployment_changed(memo: Any, namespace: str | None, name: str, **_: Any) -> None:
    memo.managed.add((namespace, name))
    telemetry.MANAGED.set(len(memo.managed))
    await _reconcile_or_retry(memo, namespace, name)


async def resync(memo: Any, namespace: str | None, name: str, body: kopf.Body, **kwargs: Any) -> None:
    """A full reconcile every interval: time-based work (drift evaluations), and a safety net for missed watch
    events. It plans from what the watches delivered, and reads the API server only to act or when a full read is
    due (:mod:`esteira.controller.observed`)."""
    await _timed_reconcile(memo, namespace, name, body, kwargs)


async def _timed_reconcile(
    memo: Any, namespace: str | None, name: str, body: kopf.Body, kwargs: dict[str, Any]
) -> None:
    """A timer's reconcile, planned from what the watches delivered (Kopf keeps a timer's body and its indices
    up to date, so an early reconcile it sets reads them again when it runs)."""
    await _reconcile_or_retry(memo, namespace, name, _watched(namespace, name, body, kwargs))
    _wake_when_due(memo, namespace, name, functools.partial(_watched, namespace, name, body, kwargs))


def index_children(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, resource: kopf.Resource, **_: Any
) -> dict[Any, Any]:
    """Kopf's index of managed children of every kind by owner, kept from the watches (Kopf fills it before any
    handler runs at start-up, and drops an object when it is deleted or loses the owner label)."""
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    return {(namespace, labels.get(LABEL_DEPLOYMENT)): child_entry(body, api_version, resource.kind or "")}


def index_retrain_jobs(**kwargs: Any) -> dict[Any, Any]:
    """Kopf's index of retraining Jobs by owner, kept as the children's is (an index of its own, which Kopf passes
    to handlers under this function's name)."""
    return index_children(**kwargs)


def _watched(namespace: str | None, name: str, body: kopf.Body, kwargs: dict[str, Any]) -> Observed | None:
    """What the watches delivered of this ModelDeployment, from the timer's body and Kopf's indices."""
    children, jobs = kwargs.get(index_children.__name__), kwargs.get(index_retrain_jobs.__name__)
    if children is None or jobs is None or namespace is None:
        return None
    return Observed.of(body, children.get((namespace, name), ()), jobs.get((namespace, name), ()))


async def model_deployment_deleted(memo: Any, namespace: str | None, name: str, **_: Any) -> None:
    """Children go with their owner (ownerReferences); only the operator's own bookkeeping is dropped."""
    memo.managed.discard((namespace, name))
    telemetry.MANAGED.set(len(memo.managed))
    if namespace is not None:
        memo.wakes.cancel((namespace, name))
        memo.reconciler.forget(namespace, name)


async def child_event(memo: Any, body: kopf.Body, **_: Any) -> None:
    """A managed child changed (KServe's status, a manual edit of an InferenceService or an HTTPRoute, a
    retraining Job finishing): reconcile its owner. Events for an owner whose reconcile is waiting to start are
    left to it, as it reads them all: a watch that lists again after a reconnect delivers every child at once,
    and a reconcile each, a full read each, came to one per child."""
    owner = body.get("metadata", {}).get("labels", {}).get(LABEL_DEPLOYMENT)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner or not namespace or (namespace, owner) in memo.waiting:
        return
    memo.waiting.add((namespace, owner))
    task = asyncio.create_task(_reconcile_soon(memo, namespace, owner))
    memo.background.add(task)
    task.add_done_callback(memo.background.discard)


async def _reconcile_soon(memo: Any, namespace: str, name: str) -> None:
    """Event handlers are not retried by Kopf, so this one retries by itself before leaving it to resync."""
    started = functools.partial(memo.waiting.discard, (namespace, name))  # from here, a new event needs a new one
    for attempt in range(5):
        try:
            await memo.reconciler.reconcile(namespace, name, started=started)
            return
        except ApiError as exc:
            logger.info("reconcile of %s/%s after child event failed (%s), attempt %d", namespace, name, exc, attempt)
            await asyncio.sleep(RETRY_DELAY * (attempt + 1))


async def rollout_command_event(memo: Any, body: kopf.Body, type: str | None, **_: Any) -> None:
    """Any RolloutCommand event: its namespace's commands are listed again at the next reconcile there. One without
    an outcome: reconcile its ModelDeployment, which carries it out."""
    status, spec = body.get("status") or {}, body.get("spec") or {}
    namespace, name = body.get("metadata", {}).get("namespace"), body.get("metadata", {}).get("name")
    if namespace:
        memo.reconciler.command_event(namespace)
    if type == "DELETED" or status.get("phase") or not namespace or not name or not spec.get("deployment"):
        return
    task = asyncio.create_task(_command_soon(memo, namespace, name, spec["deployment"]))
    memo.background.add(task)
    task.add_done_callback(memo.background.discard)


async def _command_soon(memo: Any, namespace: str, name: str, deployment: str) -> None:
    """As `_reconcile_soon`; a command for a ModelDeployment that does not exist is rejected."""
    reconciler: Reconciler = memo.reconciler
    for attempt in range(5):
        try:
            if await reconciler.reconcile(namespace, deployment) is None:
                now = format_time(datetime.now(UTC))
                why = f"no ModelDeployment {deployment} in namespace {namespace}"
                await reconciler.close_command(namespace, name, "Rejected", why, now)
            return
        except ApiError as exc:
            logger.info("RolloutCommand %s/%s failed (%s), attempt %d", namespace, name, exc, attempt)
            await asyncio.sleep(RETRY_DELAY * (attempt + 1))


async def rollout_tick(memo: Any, namespace: str | None, name: str, body: kopf.Body, **kwargs: Any) -> None:
    """Drives an active rollout: the engine decides each tick whether an analysis is due (planned as a resync
    is, from what the watches delivered)."""
    await _timed_reconcile(memo, namespace, name, body, kwargs)


def spread(seconds: float) -> Callable[..., float]:
    """A timer's first delay, drawn between half an interval and one and a half. Kopf starts every object's timer
    as the operator starts, and each next run comes an interval after the last one ends: with one fixed first delay,
    every ModelDeployment's resync would come in one burst each interval for as long as the operator runs."""
    return lambda **_: seconds * random.uniform(0.5, 1.5)


def _rolling_out(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("canary"))


def register(
    registry: kopf.OperatorRegistry, resync_seconds: float, kubeconfig: str | None, rollout_tick_seconds: float = 5.0
) -> None:
    kopf.on.startup(registry=registry)(configure)
    kopf.on.login(registry=registry)(lambda **_: connection_info(kubeconfig))
    for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
        decorator(*MD, registry=registry)(model_deployment_changed)
    kopf.on.delete(*MD, registry=registry)(model_deployment_deleted)
    kopf.timer(*MD, registry=registry, interval=resync_seconds, initial_delay=spread(resync_seconds), idle=10.0)(resync)
    kopf.timer(*MD, registry=registry, interval=rollout_tick_seconds, when=_rolling_out)(rollout_tick)
    managed = {LABEL_DEPLOYMENT: kopf.PRESENT}
    for kind in child_kinds():  # one index over every kind; a kind whose CRD is not installed is not watched
        kopf.index(kind.group, kind.version, kind.plural, registry=registry, labels=managed)(index_children)
        kopf.on.event(kind.group, kind.version, kind.plural, registry=registry, labels=managed)(child_event)
    retrain_jobs = {LABEL_DEPLOYMENT: kopf.PRESENT, LABEL_RETRAIN_RUN: kopf.PRESENT}
    kopf.index("batch", "v1", "jobs", registry=registry, labels=retrain_jobs)(index_retrain_jobs)
    kopf.on.event("batch", "v1", "jobs", registry=registry, labels=retrain_jobs)(child_event)
    kopf.on.event(API_GROUP, API_VERSION, COMMAND_PLURAL, registry=registry)(rollout_command_event)
