"""Watches: initial snapshot, resuming from a resourceVersion, no lost events, 410 Gone, selectors."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import watch

from tests.emulator import EmulatorServer, KubeEmulator
from tests.emulator.cluster import KubeApi

from .helpers import http, watch_lines, watch_until

CMS = "/api/v1/namespaces/default/configmaps"


def make_configmaps(api: KubeApi, namespace: str, *names: str) -> str:
    """Create config maps; return the resourceVersion of the last one."""
    core = api.core()
    created = [core.create_namespaced_config_map(namespace, {"metadata": {"name": name}}) for name in names]
    return str(created[-1].metadata.resource_version)


def test_watch_from_a_resource_version_sends_only_later_events(kube_api: KubeApi, kube_namespace: str) -> None:
    since = make_configmaps(kube_api, kube_namespace, "a", "b")
    make_configmaps(kube_api, kube_namespace, "c")
    kube_api.core().patch_namespaced_config_map("a", kube_namespace, {"data": {"k": "v"}})
    events = watch.Watch().stream(
        kube_api.core().list_namespaced_config_map, kube_namespace, resource_version=since, timeout_seconds=1
    )
    assert [(event["type"], event["object"].metadata.name) for event in events] == [("ADDED", "c"), ("MODIFIED", "a")]


def test_watch_without_resource_version_starts_with_a_snapshot(kube_api: KubeApi, kube_namespace: str) -> None:
    make_configmaps(kube_api, kube_namespace, "a", "b")
    later = threading.Timer(0.3, make_configmaps, (kube_api, kube_namespace, "c"))
    later.start()
    events = watch.Watch().stream(kube_api.core().list_namespaced_config_map, kube_namespace, timeout_seconds=1)
    seen = [(event["type"], event["object"].metadata.name) for event in events]
    later.join()
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_changes_between_list_and_watch_are_not_lost(kube_api: KubeApi, kube_namespace: str) -> None:
    listed = kube_api.core().list_namespaced_config_map(kube_namespace)
    make_configmaps(kube_api, kube_namespace, "between")
    events = watch.Watch().stream(
        kube_api.core().list_namespaced_config_map,
        kube_namespace,
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    assert [event["object"].metadata.name for event in events] == ["between"]


def test_no_event_is_lost_while_watches_start_under_concurrent_writes(kube_api: KubeApi, kube_namespace: str) -> None:
    """Each watch must see every object, either in its snapshot or as a later event."""
    names = {f"cm-{index}" for index in range(40)}
    writer = threading.Thread(target=make_configmaps, args=(kube_api, kube_namespace, *sorted(names)))
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps?watch=true"
    results: list[set[str]] = []

    def seen(events: list[dict[str, Any]]) -> set[str]:
        return {event["object"]["metadata"]["name"] for event in events}

    def watcher() -> None:
        results.append(seen(watch_until(kube_api.url, path, lambda events: seen(events) >= names, timeout=20)))

    watchers = [threading.Thread(target=watcher) for _ in range(8)]
    writer.start()
    for thread in watchers:
        thread.start()
        time.sleep(0.01)
    for thread in [writer, *watchers]:
        thread.join()
    assert results == [names] * 8  # a watcher that missed an event times out and adds nothing


def test_too_old_resource_version_is_410_gone_in_the_stream() -> None:
    with EmulatorServer(KubeEmulator(event_log_size=3)) as server:
        versions = [
            http(server.url, "POST", CMS, {"metadata": {"name": f"c{index}"}})[1]["metadata"]["resourceVersion"]
            for index in range(6)
        ]
        events = watch_lines(server.url, f"{CMS}?watch=true&resourceVersion={versions[0]}")
        assert [(event["type"], event["object"]["code"]) for event in events] == [("ERROR", 410)]
        recent = watch_lines(server.url, f"{CMS}?watch=true&resourceVersion={versions[3]}&timeoutSeconds=1")
        assert [event["object"]["metadata"]["name"] for event in recent] == ["c4", "c5"]


def test_watch_honours_label_selectors_and_initial_events_bookmark(kube_api: KubeApi, kube_namespace: str) -> None:
    core = kube_api.core()
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "x", "labels": {"app": "x"}}})
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "y", "labels": {"app": "y"}}})
    path = (
        f"/api/v1/namespaces/{kube_namespace}/configmaps?watch=true&timeoutSeconds=1&labelSelector=app%3Dx"
        "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    )
    events = watch_lines(kube_api.url, path)
    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "x"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_idle_watches_get_periodic_bookmarks_when_allowed() -> None:
    with EmulatorServer(KubeEmulator(bookmark_interval=0.2)) as server:
        _, created = http(server.url, "POST", CMS, {"metadata": {"name": "a"}})
        since = created["metadata"]["resourceVersion"]
        base = f"{CMS}?watch=true&timeoutSeconds=1&resourceVersion={since}"
        events = watch_lines(server.url, base + "&allowWatchBookmarks=true")
        assert {event["type"] for event in events} == {"BOOKMARK"}
        assert 2 <= len(events) <= 5
        assert events[0]["object"]["metadata"]["resourceVersion"] == since
        assert watch_lines(server.url, base) == []
