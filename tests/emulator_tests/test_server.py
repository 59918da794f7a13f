"""The threaded server wrapper: kubeconfig, namespaces, state reads, clean stop."""

from __future__ import annotations

import threading
import urllib.error

import pytest
import yaml

from tests.emulator import EmulatorServer
from tests.emulator.cluster import KubeApi, kubeconfig_server
from tests.emulator.server import DUMMY_TOKEN

from .helpers import http


def test_kubeconfig_points_the_official_client_at_the_emulator(
    kube_emulator: EmulatorServer, kube_api: KubeApi
) -> None:
    config = yaml.safe_load(kube_api.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == kube_emulator.url
    assert config["users"][0]["user"]["token"] == DUMMY_TOKEN
    assert kubeconfig_server(kube_api.kubeconfig) == kube_emulator.url
    assert kube_emulator.url.startswith("http://127.0.0.1:")
    name = kube_api.create_namespace()
    assert name in {ns.metadata.name for ns in kube_api.core().list_namespace().items}


def test_call_reads_state_on_the_server_loop(kube_emulator: EmulatorServer) -> None:
    _, created = http(kube_emulator.url, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})
    current = kube_emulator.call(lambda: kube_emulator.emulator.store.resource_version)
    assert current == int(created["metadata"]["resourceVersion"])
    assert kube_emulator.emulator.objects["v1/configmaps", "default", "a"]["metadata"]["name"] == "a"
    assert not kube_emulator.emulator.errors


def test_stop_ends_open_watches_and_closes_the_port() -> None:
    server = EmulatorServer().start()
    url = server.url
    lines: list[int] = []
    # Open the watch here, so it is established (headers received) before the object is created.
    request = urllib.request.Request(url + "/api/v1/configmaps?watch=true", headers={"User-Agent": "esteira-tests"})
    response = urllib.request.urlopen(request, timeout=10)
    watcher = threading.Thread(target=lambda: lines.append(len([x for x in response.read().splitlines() if x.strip()])))
    watcher.start()
    assert http(url, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "a"}})[0] == 201
    server.stop()
    watcher.join(5)
    assert not watcher.is_alive()
    assert lines == [1]
    with pytest.raises(urllib.error.URLError):
        http(url, "GET", "/api/v1/configmaps", timeout=2)
    server.stop()  # idempotent
