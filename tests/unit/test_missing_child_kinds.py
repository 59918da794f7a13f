"""A child kind whose CRD is not installed answers 404 to a list; it is not listed again for a while, so a
resync without Gateway API reads one object less, and creating one of that kind ends the wait at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from esteira.controller import kube as kube_module
from esteira.controller.kube import KubeAPI
from esteira.routing.gateway import HTTP_ROUTES
from esteira.routing.kserve import INFERENCE_SERVICES
from esteira.vocabulary import LABEL_DEPLOYMENT


class CustomObjects:
    """Custom objects by plural; a plural left out of `installed` answers 404, as an API server without its CRD."""

    def __init__(self) -> None:
        self.installed = {INFERENCE_SERVICES.plural}
        self.lists: list[str] = []
        self.items: dict[str, list[dict[str, Any]]] = {}

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, **_: Any) -> Any:
        self.lists.append(plural)
        if plural not in self.installed:
            raise ApiException(status=404, reason="Not Found")
        return {"items": self.items.get(plural, [])}

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any], **_: Any
    ) -> Any:
        if plural not in self.installed:
            raise ApiException(status=404, reason="Not Found")
        self.items.setdefault(plural, []).append(body)
        return body


@pytest.fixture
def objects() -> CustomObjects:
    return CustomObjects()


@pytest.fixture
def api(objects: CustomObjects) -> KubeAPI:
    kube = KubeAPI(api_client=ApiClient(Configuration()), concurrency=2)
    kube._api = objects  # type: ignore[assignment]
    return kube


def route(name: str) -> dict[str, Any]:
    return {
        "apiVersion": HTTP_ROUTES.api_version,
        "kind": HTTP_ROUTES.kind,
        "metadata": {"name": name, "labels": {LABEL_DEPLOYMENT: "iris"}},
    }


def children(api: KubeAPI) -> set[str]:
    return {key[2] for key in asyncio.run(api.list_children("team", "iris"))}


def test_a_kind_without_its_crd_is_listed_once_within_the_wait(api: KubeAPI, objects: CustomObjects) -> None:
    children(api)
    children(api)
    assert objects.lists.count(HTTP_ROUTES.plural) == 1
    assert objects.lists.count(INFERENCE_SERVICES.plural) == 2, "an installed kind is listed every time"


def test_the_wait_ends_after_its_time(api: KubeAPI, objects: CustomObjects, monkeypatch: pytest.MonkeyPatch) -> None:
    children(api)
    monkeypatch.setattr(kube_module, "MISSING_KIND_SECONDS", 0.0)
    objects.installed.add(HTTP_ROUTES.plural)
    objects.items[HTTP_ROUTES.plural] = [route("iris-route")]
    assert children(api) == {"iris-route"}
    assert objects.lists.count(HTTP_ROUTES.plural) == 2


def test_creating_one_of_the_kind_ends_the_wait_at_once(api: KubeAPI, objects: CustomObjects) -> None:
    children(api)
    objects.installed.add(HTTP_ROUTES.plural)
    asyncio.run(api.create_child("team", route("iris-route")))
    assert children(api) == {"iris-route"}, "the object just created is listed, not hidden by the wait"


def test_a_create_refused_for_the_missing_kind_keeps_the_wait(api: KubeAPI, objects: CustomObjects) -> None:
    children(api)
    with pytest.raises(Exception, match="Not Found"):
        asyncio.run(api.create_child("team", route("iris-route")))
    children(api)
    assert objects.lists.count(HTTP_ROUTES.plural) == 1
