"""A stand-in Gateway controller for the emulator: accepts every HTTPRoute in the given namespaces."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
CONTROLLER = "example.com/fake-gateway"


class FakeGateway:
    """Polls HTTPRoutes and reports each parent Gateway as having accepted the current generation."""

    def __init__(self, kubeconfig: Path | str, namespaces: list[str], interval: float = 0.2) -> None:
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        client.user_agent = "fake-gateway"
        self._api = kubernetes.client.CustomObjectsApi(client)
        self.namespaces = namespaces
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-gateway", daemon=True)

    def _accept(self, route: dict[str, Any]) -> None:
        generation = route["metadata"].get("generation", 1)
        parents = (route.get("status") or {}).get("parents") or []
        if parents and all(
            c.get("observedGeneration") == generation for p in parents for c in p.get("conditions") or []
        ):
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "parents": [
                {
                    "parentRef": ref,
                    "controllerName": CONTROLLER,
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "True",
                            "reason": "Accepted",
                            "message": "accepted by the fake gateway",
                            "observedGeneration": generation,
                            "lastTransitionTime": now,
                        }
                    ],
                }
                for ref in route["spec"].get("parentRefs") or []
            ]
        }
        meta = route["metadata"]
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for namespace in self.namespaces:
                try:
                    for route in self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
                        self._accept(route)
                except ApiException:
                    continue  # the CRD may not be installed yet, or the route went away

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
