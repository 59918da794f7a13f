"""Operator benchmark on the API emulator: apply-to-InferenceService latency and memory at scale.

Run with `make bench`. Prints a table and writes `.bench/operator.json`. Figures depend on the machine;
nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import watch
from urllib3.exceptions import ProtocolError

from esteira.controller.kube import KSERVE_GROUP, KSERVE_PLURAL, KSERVE_VERSION
from tests.emulator.cluster import KubeApi
from tests.emulator.server import EmulatorServer
from tests.support.cluster import ESTEIRA_CRD, Esteira, eventually
from tests.support.fake_kserve import FakeKServe
from tests.support.operator_process import OperatorProcess
from tests.support.schemas import upstream_crds_path
from tests.support.specs import document, spec

REPO = Path(__file__).resolve().parents[2]


class CreationClock:
    """Records when each InferenceService first appears, from a watch on the API."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self._api = api.custom_objects()
        self._namespace = namespace
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        stream = self._watch.stream(
            self._api.list_namespaced_custom_object,
            KSERVE_GROUP,
            KSERVE_VERSION,
            self._namespace,
            KSERVE_PLURAL,
            timeout_seconds=3600,
        )
        try:
            for event in stream:
                if event["type"] == "ADDED":
                    self.seen.setdefault(event["object"]["metadata"]["name"], time.monotonic())
        except ProtocolError:
            pass  # the server shut down at the end of the run

    def stop(self) -> None:
        self._watch.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def manifest(namespace: str, index: int) -> dict[str, Any]:
    name = f"model-{index:04d}"
    body = spec()
    body["model"] = {**body["model"], "name": name}
    return document(body, name=name, namespace=namespace)


def run(latency_objects: int, total_objects: int, out: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="esteira-bench-"))
    with EmulatorServer() as server:
        api = KubeApi(kubeconfig=server.write_kubeconfig(work / "kubeconfig"), url=server.url, emulator=server)
        api.apply_crd(ESTEIRA_CRD)
        api.apply_crd(upstream_crds_path() / "kserve-v0.20.0" / "serving.kserve.io_inferenceservices.yaml")
        namespace = api.create_namespace("esteira-bench-")
        esteira = Esteira(api.api_client())
        clock = CreationClock(api, namespace)
        clock.start()
        operator = OperatorProcess(str(api.kubeconfig), [namespace], work / "operator.log", resync_seconds=600)
        with FakeKServe(api.kubeconfig, [namespace]), operator:
            idle_rss = operator.rss_bytes()
            applied: dict[str, float] = {}
            for index in range(latency_objects):
                body = manifest(namespace, index)
                applied[body["metadata"]["name"]] = time.monotonic()
                esteira.create_md(namespace, body)
                # One at a time: the latency of an apply, not of a queue of them.
                eventually(lambda n=body["metadata"]["name"]: n in clock.seen, timeout=30, what="InferenceService")
            latencies = [clock.seen[name] - start for name, start in applied.items()]

            started = time.monotonic()
            for index in range(latency_objects, total_objects):
                esteira.create_md(namespace, manifest(namespace, index))
            eventually(lambda: len(clock.seen) >= total_objects, timeout=1800, what="all InferenceServices")
            bulk_seconds = time.monotonic() - started
            last = f"model-{total_objects - 1:04d}"
            eventually(
                lambda: (esteira.condition(namespace, last, "Ready") or {}).get("status") == "True",
                timeout=600,
                what="last ModelDeployment Ready",
            )
            time.sleep(5)  # let status updates settle before reading memory
            rss = operator.rss_bytes()
        clock.stop()

    result = {
        "latency_objects": latency_objects,
        "apply_to_isvc_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "apply_to_isvc_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "apply_to_isvc_max_ms": round(max(latencies) * 1000, 1),
        "total_objects": total_objects,
        "bulk_create_seconds": round(bulk_seconds, 1),
        "operator_rss_idle_mib": round(idle_rss / 2**20, 1),
        "operator_rss_mib": round(rss / 2**20, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-objects", type=int, default=100)
    parser.add_argument("--total-objects", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "operator.json")
    args = parser.parse_args()
    result = run(args.latency_objects, args.total_objects, args.out)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
