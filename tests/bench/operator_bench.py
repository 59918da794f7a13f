"""The operator at scale on the API emulator: how long 100 and 1,000 ModelDeployments take to converge, how long a
reconcile takes, and what the operator costs (memory and CPU) at rest and with 50 rollouts under analysis.

Everything is real but the cluster: the operator process with its default resync and rollout tick, the API
emulator with a fake KServe, and a Prometheus server scraping an exporter per rolling-out model. Each size runs
on a fresh emulator and operator. Run with `make bench`; writes `benchmarks/results/operator.json` and
`operator.md`. Figures depend on the machine; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import watch
from prometheus_client.parser import text_string_to_metric_families
from urllib3.exceptions import ProtocolError

from benchmarks.serving import machine
from esteira import API_GROUP, API_VERSION, PLURAL
from esteira.controller.config import DEFAULT_API_CONCURRENCY
from esteira.controller.kube import KSERVE_GROUP, KSERVE_PLURAL, KSERVE_VERSION
from esteira.controller.observed import FULL_READ_SECONDS
from tests.bench.rollout_bench import ANALYSIS
from tests.emulator.cluster import KubeApi
from tests.emulator.server import EmulatorServer
from tests.support.cluster import ESTEIRA_CRD, Esteira, eventually
from tests.support.fake_kserve import FakeKServe
from tests.support.model_exporter import ModelExporter
from tests.support.operator_process import OperatorProcess
from tests.support.prometheus_server import PrometheusServer
from tests.support.schemas import upstream_crds_path
from tests.support.scratch import scratch
from tests.support.specs import document, spec

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
RECONCILE_HISTOGRAM = "esteira_operator_reconcile_duration_seconds"
RECONCILES = "esteira_operator_reconciles"
API_CALLS = "esteira_operator_api_calls"
RECONCILE_READS = "esteira_operator_reconcile_reads"
ROLLOUT = {"steps": [5, 10, 20, 30, 50, 100], "interval": "30s", "threshold": 2, "analysis": ANALYSIS}
EXPORTER_RATE = 20.0  # requests a second each rolling-out model's exporter plays


class FirstSeen:
    """When each object of a watched list first satisfied ``ready``, from a watch on the API (no polling)."""

    def __init__(self, list_call: Callable[..., Any], *args: str, ready: Callable[[dict[str, Any]], bool]) -> None:
        self.seen: dict[str, float] = {}
        self._list_call, self._args, self._ready = list_call, args, ready
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        stream = self._watch.stream(self._list_call, *self._args, timeout_seconds=3600)
        try:
            for event in stream:
                body = event["object"]
                if event["type"] != "DELETED" and self._ready(body):
                    self.seen.setdefault(body["metadata"]["name"], time.monotonic())
        except ProtocolError:
            pass  # the server shut down at the end of the run

    def __enter__(self) -> FirstSeen:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._watch.stop()


def is_ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def cpu_seconds(pid: int) -> float:
    """User and system CPU the process has used (``/proc/PID/stat``, fields 14 and 15)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    """The operator's counters at one moment: what a window's figures are the difference of."""

    at: float
    cpu: float
    cluster_cpu: float  # this process: the API emulator, the fake KServe and the exporters
    buckets: dict[float, float]  # reconcile duration histogram: upper bound -> cumulative count
    reconciles: float
    api_calls: dict[str, float]  # verb -> calls so far
    reads: dict[str, float]  # what reconciles planned from (watch, api, stale) -> reconciles so far


def read(operator: OperatorProcess) -> Reading:
    assert operator.process is not None
    buckets: dict[float, float] = {}
    reconciles = 0.0
    api_calls: dict[str, float] = {}
    reads: dict[str, float] = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == f"{RECONCILE_HISTOGRAM}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == f"{RECONCILES}_total":
                reconciles += sample.value
            elif sample.name == f"{API_CALLS}_total":
                api_calls[sample.labels["verb"]] = sample.value
            elif sample.name == f"{RECONCILE_READS}_total":
                reads[sample.labels["source"]] = sample.value
    return Reading(
        time.monotonic(),
        cpu_seconds(operator.process.pid),
        cpu_seconds(os.getpid()),
        buckets,
        reconciles,
        api_calls,
        reads,
    )


def quantile(q: float, before: Reading, after: Reading) -> float | None:
    """The ``q`` quantile of reconcile durations between two readings, interpolated within a bucket as
    Prometheus's ``histogram_quantile`` does; None when no reconcile ran."""
    bounds = sorted(after.buckets)
    counts = [after.buckets[b] - before.buckets.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below) if count > below else bound
        lower, below = bound, count
    return lower


def window(before: Reading, after: Reading, rss_mib: float) -> dict[str, Any]:
    """What the operator cost and did between two readings."""
    seconds = after.at - before.at
    p50, p99 = quantile(0.5, before, after), quantile(0.99, before, after)
    calls = {verb: (count - before.api_calls.get(verb, 0.0)) / seconds for verb, count in after.api_calls.items()}
    reads = {source: count - before.reads.get(source, 0.0) for source, count in after.reads.items()}
    planned = reads.get("watch", 0.0) + reads.get("api", 0.0)
    return {
        "seconds": round(seconds, 1),
        "cpu_cores": round((after.cpu - before.cpu) / seconds, 3),
        "cluster_cpu_cores": round((after.cluster_cpu - before.cluster_cpu) / seconds, 3),
        "rss_mib": rss_mib,
        "reconciles_per_second": round((after.reconciles - before.reconciles) / seconds, 2),
        "api_calls_per_second": round(sum(calls.values()), 1),
        "api_calls_per_second_by_verb": {verb: round(rate, 1) for verb, rate in sorted(calls.items())},
        "planned_from_watches": round(reads.get("watch", 0.0) / planned, 3) if planned else None,
        "planned_again": reads.get("stale", 0.0),
        "reconcile_p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "reconcile_p99_ms": None if p99 is None else round(p99 * 1000, 1),
    }


def manifest(namespace: str, name: str, version: str = "1", rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    body = spec(**({"rollout": rollout} if rollout else {}))
    body["model"] = {**body["model"], "name": name, "version": version, "storageUri": f"s3://models/{name}/{version}"}
    return document(body, name=name, namespace=namespace)


def mib(operator: OperatorProcess) -> float:
    return round(operator.rss_bytes() / 2**20, 1)


@contextmanager
def cluster(work: Path, rolling: list[str], operator_args: list[str]) -> Iterator[tuple[Esteira, str, OperatorProcess]]:
    """A fresh emulator with a fake KServe, exporters and Prometheus for the ``rolling`` models, and the operator
    with its default resync and tick (and ``operator_args``)."""
    with ExitStack() as stack:
        server = stack.enter_context(EmulatorServer())
        api = KubeApi(kubeconfig=server.write_kubeconfig(work / "kubeconfig"), url=server.url, emulator=server)
        api.apply_crd(ESTEIRA_CRD)
        api.apply_crd(upstream_crds_path() / "kserve-v0.20.0" / "serving.kserve.io_inferenceservices.yaml")
        namespace = api.create_namespace("esteira-bench-")
        exporters = [ModelExporter(namespace, name, rate=EXPORTER_RATE, seed=i) for i, name in enumerate(rolling)]
        for exporter in exporters:
            exporter.set_arm(1, 0.5)  # both arms serve from the start: every analysis finds evidence
            exporter.set_arm(2, 0.5)
            exporter.start()
            stack.callback(exporter.stop)
        prometheus = PrometheusServer(work, [f"127.0.0.1:{e.port}" for e in exporters], scrape_interval="5s").start()
        stack.callback(prometheus.stop)
        stack.enter_context(FakeKServe(api.kubeconfig, [namespace]))
        operator = stack.enter_context(
            OperatorProcess(
                str(api.kubeconfig),
                [namespace],
                work / "operator.log",
                resync_seconds=60.0,
                extra_args=["--prometheus-url", prometheus.url, *operator_args],
            )
        )
        yield Esteira(api.api_client()), namespace, operator


def settle_heap() -> None:
    """Move this process's live objects out of the garbage collector's reach before a window.

    The API emulator holds every object in this process; once it held 1,000 ModelDeployments and their
    InferenceServices, each full collection walked them all and paused the emulator for up to a second every
    few seconds, and the operator's reconciles waited it out: the p99 measured the emulator's collector, which a
    real API server does not have. Objects alive now are frozen; those made later are collected as usual."""
    gc.collect()
    gc.freeze()


def run(
    objects: int, rolling: int, singles: int, rest_seconds: float, rollout_seconds: float, operator_args: list[str]
) -> dict[str, Any]:
    """One size on a fresh cluster: all ``objects`` applied at once, then ``singles`` more one at a time, a
    window at rest, and a window with ``rolling`` of them rolling out."""
    names = [f"model-{index:04d}" for index in range(objects)]
    with (
        scratch("esteira-operator-bench-") as work,
        cluster(work, names[:rolling], operator_args) as (esteira, namespace, operator),
    ):
        custom = esteira.custom
        services = FirstSeen(
            custom.list_namespaced_custom_object,
            KSERVE_GROUP,
            KSERVE_VERSION,
            namespace,
            KSERVE_PLURAL,
            ready=lambda _body: True,
        )
        deployments = FirstSeen(
            custom.list_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, ready=is_ready
        )
        with services, deployments:
            empty_rss = mib(operator)
            settle_heap()
            before = read(operator)
            started = time.monotonic()
            for name in names:
                esteira.create_md(namespace, manifest(namespace, name))
            applied_seconds = time.monotonic() - started
            eventually(lambda: len(deployments.seen) >= objects, timeout=1800, what="every ModelDeployment Ready")
            converging = window(before, read(operator), mib(operator))
            converge = {
                "apply_all_seconds": round(applied_seconds, 1),
                "to_inference_services_seconds": round(max(services.seen.values()) - started, 1),
                "to_ready_seconds": round(max(deployments.seen.values()) - started, 1),
                **converging,
            }

            applied: dict[str, float] = {}
            settle_heap()
            for index in range(singles):
                name = f"single-{index:03d}"
                applied[name] = time.monotonic()
                esteira.create_md(namespace, manifest(namespace, name))
                # One at a time: the latency of one apply among the others, not of a queue of them.
                eventually(lambda n=name: n in deployments.seen, timeout=60, what=f"{name} Ready")
            to_isvc = [services.seen[name] - at for name, at in applied.items()]
            to_ready = [deployments.seen[name] - at for name, at in applied.items()]
            single = {
                "applies": singles,
                "to_inference_service_p50_ms": round(statistics.median(to_isvc) * 1000, 1),
                "to_inference_service_max_ms": round(max(to_isvc) * 1000, 1),
                "to_ready_p50_ms": round(statistics.median(to_ready) * 1000, 1),
                "to_ready_max_ms": round(max(to_ready) * 1000, 1),
            }

            settle_heap()
            before = read(operator)
            time.sleep(rest_seconds)  # a measurement window: what the operator spends while nothing changes
            rest = window(before, read(operator), mib(operator))

            for name in names[:rolling]:
                model = manifest(namespace, name, "2", ROLLOUT)["spec"]
                esteira.patch_md(namespace, name, {"spec": {"model": model["model"], "rollout": model["rollout"]}})

            def canaries() -> bool:
                listed = custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)["items"]
                return sum(1 for item in listed if (item.get("status") or {}).get("canary")) >= rolling

            eventually(canaries, timeout=300, what=f"{rolling} canaries")
            settle_heap()
            before = read(operator)
            time.sleep(rollout_seconds)  # a measurement window, shorter than the rollouts themselves
            rolling_out = window(before, read(operator), mib(operator))
            still = sum(
                1
                for item in custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)["items"]
                if (item.get("status") or {}).get("canary")
            )
    return {
        "objects": objects,
        "empty_rss_mib": empty_rss,
        "converge": converge,
        "single_apply": single,
        "at_rest": rest,
        "rollouts": {"started": rolling, "active_at_end": still, **rolling_out},
    }


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def markdown(result: dict[str, Any]) -> str:
    host, sizes = result["machine"], result["sizes"]
    lines = [
        "# Operator at scale",
        "",
        "Written by `make bench` (`python -m tests.bench.operator_bench`). Machine: "
        f"{host['cpu']}, {host['cores_usable']} usable cores, {host['memory_gib']} GiB. The operator process (defaults: "
        "full resync every 60 s, active rollouts looked at every 5 s, "
        f"{result['api_concurrency']} API calls in flight at most, a ModelDeployment read from the API server at least "
        f"every {result['full_read_seconds']:g} s) against the API emulator with a fake KServe "
        "marking InferenceServices ready; each size on a fresh emulator and operator. Reconcile p50/p99 are read "
        "from the operator's own histogram (`esteira_operator_reconcile_duration_seconds`) over the window, "
        "interpolated within a bucket as `histogram_quantile` does. CPU is in cores: the operator process's, and "
        "the cluster side's (the API emulator, the fake KServe and the exporters, all in the benchmark's one Python "
        "process): where the cluster side nears one core, the emulator, not the operator, sets the pace. That "
        "process freezes its live objects before each window, so the emulator's own garbage collections (up to a "
        "second each with 1,000 objects) pause the cluster side only while the objects are applied at once.",
        "",
        "## Converging: every ModelDeployment applied at once",
        "",
        *table(
            [
                "ModelDeployments",
                "applying them took s",
                "all InferenceServices s",
                "all Ready s",
                "reconciles/s",
                "API calls/s",
                "reconcile p50 ms",
                "p99 ms",
                "operator CPU",
                "cluster CPU",
                "operator RSS MiB (empty)",
            ],
            [
                [
                    f"{size['objects']:,}",
                    c["apply_all_seconds"],
                    c["to_inference_services_seconds"],
                    c["to_ready_seconds"],
                    c["reconciles_per_second"],
                    c["api_calls_per_second"],
                    c["reconcile_p50_ms"],
                    c["reconcile_p99_ms"],
                    c["cpu_cores"],
                    c["cluster_cpu_cores"],
                    f"{c['rss_mib']} ({size['empty_rss_mib']})",
                ]
                for size in sizes
                for c in [size["converge"]]
            ],
        ),
        "",
        "## One more apply among them, one at a time",
        "",
        *table(
            [
                "ModelDeployments already there",
                "applies",
                "to InferenceService p50 ms",
                "max ms",
                "to Ready p50 ms",
                "max ms",
            ],
            [
                [
                    f"{size['objects']:,}",
                    one["applies"],
                    one["to_inference_service_p50_ms"],
                    one["to_inference_service_max_ms"],
                    one["to_ready_p50_ms"],
                    one["to_ready_max_ms"],
                ]
                for size in sizes
                for one in [size["single_apply"]]
            ],
        ),
        "",
        "## Steady state: at rest, and with rollouts under analysis",
        "",
        f"Rollouts: steps {ROLLOUT['steps']}, interval {ROLLOUT['interval']}, error rate, latency and prediction "
        f"shift analysed against Prometheus; each canary's exporter plays {EXPORTER_RATE:g} requests/s.",
        "",
        *table(
            [
                "ModelDeployments",
                "state",
                "window s",
                "operator CPU",
                "cluster CPU",
                "operator RSS MiB",
                "reconciles/s",
                "API calls/s",
                "planned from the watches",
                "reconcile p50 ms",
                "p99 ms",
            ],
            [
                [
                    f"{size['objects']:,}",
                    state,
                    f["seconds"],
                    f["cpu_cores"],
                    f["cluster_cpu_cores"],
                    f["rss_mib"],
                    f["reconciles_per_second"],
                    f["api_calls_per_second"],
                    "" if f.get("planned_from_watches") is None else f"{f['planned_from_watches']:.0%}",
                    f["reconcile_p50_ms"],
                    f["reconcile_p99_ms"],
                ]
                for size in sizes
                for state, f in (
                    ("at rest", size["at_rest"]),
                    (
                        f"{size['rollouts']['started']} rolling out ({size['rollouts']['active_at_end']} still at the "
                        "end)",
                        size["rollouts"],
                    ),
                )
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rolling", type=int, default=50, help="rollouts under analysis in the last window")
    parser.add_argument("--singles", type=int, default=20, help="applies one at a time after the bulk")
    parser.add_argument("--rest-seconds", type=float, default=60.0, help="at least one resync interval")
    parser.add_argument("--rollout-seconds", type=float, default=60.0)
    parser.add_argument("--api-concurrency", type=int, help="the operator's --api-concurrency (default: its own)")
    parser.add_argument(
        "--full-read-seconds", type=float, help="the operator's --full-read-seconds (default: its own; 0: every time)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "operator")
    args = parser.parse_args()
    operator_args = [] if args.api_concurrency is None else ["--api-concurrency", str(args.api_concurrency)]
    if args.full_read_seconds is not None:
        operator_args += ["--full-read-seconds", str(args.full_read_seconds)]
    result: dict[str, Any] = {
        "machine": machine(),
        "api_concurrency": args.api_concurrency or DEFAULT_API_CONCURRENCY,
        "full_read_seconds": FULL_READ_SECONDS if args.full_read_seconds is None else args.full_read_seconds,
        "sizes": [
            run(size, min(args.rolling, size), args.singles, args.rest_seconds, args.rollout_seconds, operator_args)
            for size in args.sizes
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
