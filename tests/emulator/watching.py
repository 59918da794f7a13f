"""Watch streams: JSON lines of events that start from a snapshot or a resourceVersion and never miss one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp.web
import kmock

from . import errors
from .bodies import int_param, json_line, selection, status_body
from .paths import ApiPath
from .store import Kind, ObjectStore, WatchEvent


async def serve_watch(
    store: ObjectStore,
    request: kmock.Request,
    path: ApiPath,
    kind: Kind,
    *,
    drop_after: float | None,
    bookmark_interval: float,
    gone: bool = False,
) -> aiohttp.web.StreamResponse:
    """Stream events: a snapshot or the log since ``resourceVersion`` first, then live ones, until a limit.

    ``gone`` ends the stream at ``drop_after`` with an ERROR 410 event, as when the watch's resourceVersion
    has expired from the server's cache.
    """
    params = request.params
    matches = selection(request, path, kind)

    def wanted(event: WatchEvent) -> bool:
        namespace = event.object["metadata"].get("namespace")
        return (path.namespace is None or namespace == path.namespace) and matches(event.object)

    initial_events = params.get("sendInitialEvents") == "true"
    bookmarks = bookmark_interval if params.get("allowWatchBookmarks") == "true" else None
    since_text = params.get("resourceVersion") or ""
    since = None if initial_events or since_text in ("", "0") else int_param("resourceVersion", since_text)
    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    assert request._raw_request is not None  # only None for hand-made requests in kmock's own tests
    try:
        first, subscription = store.subscribe(kind.resource, since)
    except kmock.KubernetesError as exc:  # 410 Gone travels inside the stream, as on a real server
        await response.prepare(request._raw_request)
        await response.write(json_line({"type": "ERROR", "object": status_body(exc)}))
        await response.write_eof()
        return response

    limits = [float(params["timeoutSeconds"])] if params.get("timeoutSeconds") else []
    if drop_after is not None:
        limits.append(drop_after)
    expired = False
    try:
        await response.prepare(request._raw_request)
        with contextlib.suppress(ConnectionResetError):
            try:
                async with asyncio.timeout(min(limits) if limits else None):
                    await _pump(store, response, first, subscription.queue, wanted, kind, initial_events, bookmarks)
            except TimeoutError:
                expired = gone and drop_after is not None and drop_after <= min(limits)
    finally:
        store.unsubscribe(subscription)
    with contextlib.suppress(ConnectionResetError):
        if expired:
            error = errors.api_error(410, "Expired", "too old resource version (injected fault)", injected=True)
            await response.write(json_line({"type": "ERROR", "object": status_body(error)}))
        await response.write_eof()
    return response


async def _pump(
    store: ObjectStore,
    response: aiohttp.web.StreamResponse,
    first: list[WatchEvent],
    queue: asyncio.Queue[WatchEvent | None],
    wanted: Callable[[WatchEvent], bool],
    kind: Kind,
    initial_events: bool,
    bookmarks: float | None,
) -> None:
    """Write the first events, then live ones until the queue says stop (or the caller's timeout hits)."""
    for initial in first:
        if wanted(initial):
            await response.write(json_line(initial.as_json()))
    if initial_events:
        bookmark = _bookmark(store, kind)
        bookmark["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
        await response.write(json_line({"type": "BOOKMARK", "object": bookmark}))
    event: WatchEvent | None
    while True:
        try:
            async with asyncio.timeout(bookmarks):
                event = await queue.get()
        except TimeoutError:  # idle: tell the client how far it is up to date, as a real server does
            await response.write(json_line({"type": "BOOKMARK", "object": _bookmark(store, kind)}))
            continue
        if event is None:
            return
        if wanted(event):
            await response.write(json_line(event.as_json()))


def _bookmark(store: ObjectStore, kind: Kind) -> dict[str, Any]:
    version = str(store.resource_version)
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"resourceVersion": version}}
