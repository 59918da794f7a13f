"""Rollout benchmark: false rollbacks over good canaries (and the single failed analyses that did not reach the
threshold, by check), and time from breach to rollback for bad ones.

Everything is real but the cluster: the operator process, the API emulator with a fake KServe, a
Prometheus server scraping exporters that play each arm. All canaries run at once, as they would in
one operator. Run with `make bench`; writes `benchmarks/results/rollouts.json`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.bench.results import record
from tests.emulator.cluster import KubeApi
from tests.emulator.server import EmulatorServer
from tests.support.cluster import ESTEIRA_CRD, Esteira, eventually
from tests.support.fake_kserve import FakeKServe
from tests.support.model_exporter import ArmProfile, ModelExporter
from tests.support.operator_process import OperatorProcess
from tests.support.prometheus_server import PrometheusServer
from tests.support.schemas import upstream_crds_path
from tests.support.scratch import scratch
from tests.support.specs import document, spec
from tests.support.traffic import TrafficMirror

REPO = Path(__file__).resolve().parents[2]
ANALYSIS = {  # what each benchmark's canaries are judged on
    "minRequests": 10,
    "errorRate": {"max": 0.05},
    "latency": {"p95MaxSeconds": 0.5},
    "predictionShift": {"method": "JensenShannon", "max": 0.2},
}


def manifest(namespace: str, name: str, version: str, interval: int) -> dict[str, Any]:
    body = spec(rollout={"steps": [20, 50, 100], "interval": f"{interval}s", "threshold": 2, "analysis": ANALYSIS})
    body["model"] = {"name": name, "version": version, "storageUri": f"s3://models/{name}/{version}"}
    return document(body, name=name, namespace=namespace)


def failed_checks(messages: Iterable[str]) -> Counter[str]:
    """How often each check failed, from AnalysisFailed messages ("...: name=value (bound, n=N) Fail; ...")."""
    found: Counter[str] = Counter()
    for message in messages:
        verdicts = message.split(": ", 1)[-1].split("; ")
        found.update(verdict.split("=", 1)[0] for verdict in verdicts if verdict.endswith(" Fail"))
    return found


def run(good: int, bad: int, interval: int, rate: float) -> dict[str, Any]:
    runs = [(f"good-{i:02d}", ArmProfile()) for i in range(good)]
    runs += [(f"bad-{i:02d}", ArmProfile(error_rate=0.3)) for i in range(bad)]
    with ExitStack() as stack:
        work = stack.enter_context(scratch("esteira-rollout-bench-"))  # left last: the servers stop first
        server = stack.enter_context(EmulatorServer())
        api = KubeApi(kubeconfig=server.write_kubeconfig(work / "kubeconfig"), url=server.url, emulator=server)
        api.apply_crd(ESTEIRA_CRD)
        api.apply_crd(upstream_crds_path() / "kserve-v0.20.0" / "serving.kserve.io_inferenceservices.yaml")
        namespace = api.create_namespace("esteira-bench-")
        esteira = Esteira(api.api_client())
        exporters = {
            name: ModelExporter(namespace, name, rate=rate, seed=i).start() for i, (name, _) in enumerate(runs)
        }
        for exporter in exporters.values():
            stack.callback(exporter.stop)
        prometheus = PrometheusServer(work, [f"127.0.0.1:{e.port}" for e in exporters.values()]).start()
        stack.callback(prometheus.stop)
        stack.enter_context(FakeKServe(api.kubeconfig, [namespace]))
        stack.enter_context(
            OperatorProcess(
                str(api.kubeconfig),
                [namespace],
                work / "operator.log",
                extra_args=["--prometheus-url", prometheus.url, "--rollout-tick-seconds", "0.5"],
            )
        )
        mirrors = {}
        for name, profile in runs:
            mirror = TrafficMirror(esteira, namespace, exporters[name], {1: ArmProfile(), 2: profile}, name=name)
            mirrors[name] = stack.enter_context(mirror)
            esteira.create_md(namespace, manifest(namespace, name, "1", interval))
        for name, _ in runs:
            eventually(
                lambda n=name: (esteira.condition(namespace, n, "Ready") or {}).get("status") == "True",
                timeout=60,
                what=f"{name} ready",
            )
        time.sleep(interval)
        for name, _ in runs:
            esteira.patch_md(
                namespace, name, {"spec": {"model": manifest(namespace, name, "2", interval)["spec"]["model"]}}
            )
        finished: dict[str, tuple[float, dict[str, Any]]] = {}

        def all_done() -> bool:
            for name, _ in runs:
                if name in finished:
                    continue
                status = esteira.get_md(namespace, name).get("status") or {}
                last = status.get("lastRollout")
                if last and last["revision"] == 2 and not status.get("canary"):
                    finished[name] = (time.monotonic(), last)
            return len(finished) == len(runs)

        eventually(all_done, timeout=30 * interval + 120, what="every rollout finished")
        good_failures = failed_checks(
            event["message"]
            for name, _ in runs
            if name.startswith("good")
            for event in esteira.events_for(namespace, name)
            if event["reason"] == "AnalysisFailed"
        )

    false_rollbacks = sum(
        1 for name, _ in runs if name.startswith("good") and finished[name][1]["outcome"] != "Promoted"
    )
    missed = sum(1 for name, _ in runs if name.startswith("bad") and finished[name][1]["outcome"] != "RolledBack")
    breach_to_rollback = [
        finished[name][0] - (mirrors[name].timeline.first_traffic() or finished[name][0])
        for name, _ in runs
        if name.startswith("bad")
    ]
    promote_seconds = [
        finished[name][0] - (mirrors[name].timeline.first_traffic() or finished[name][0])
        for name, _ in runs
        if name.startswith("good")
    ]
    result = {
        "interval_seconds": interval,
        "requests_per_second": rate,
        "steps": [20, 50, 100],
        "threshold": 2,
        "good_canaries": good,
        "false_rollbacks": false_rollbacks,
        "good_failed_analyses": sum(good_failures.values()),
        "good_failed_checks": dict(sorted(good_failures.items())),
        "bad_canaries": bad,
        "missed_rollbacks": missed,
        "breach_to_rollback_p50_s": round(statistics.median(breach_to_rollback), 2) if breach_to_rollback else None,
        "breach_to_rollback_max_s": round(max(breach_to_rollback), 2) if breach_to_rollback else None,
        "first_traffic_to_promotion_p50_s": round(statistics.median(promote_seconds), 2) if promote_seconds else None,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--good", type=int, default=20)
    parser.add_argument("--bad", type=int, default=5)
    parser.add_argument("--interval", type=int, default=5, help="rollout.interval in seconds")
    parser.add_argument("--rate", type=float, default=60.0, help="each ModelDeployment's requests a second")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rollouts.json")
    args = parser.parse_args()
    record(run(args.good, args.bad, args.interval, args.rate), args.out)


if __name__ == "__main__":
    main()
