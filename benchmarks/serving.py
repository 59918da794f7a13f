"""The serving table: every way Esteira can serve a model, next to its ceilings and its peers, in one run.

``python -m benchmarks.serving`` (``make bench``) runs the rows group by group (``GROUPS``): the servers of a
group are all up at once, each warmed, then driven with wrk (:mod:`benchmarks.load`) at each concurrency in
alternation, row after row (every other round in reverse), for every repeat of a point; each point keeps the median (a lone caller's point, the
noisiest, ``LONE_EXTRA_REPEATS`` more times) and the runs, which the ratios pair. It writes
``benchmarks/results/serving.json`` and ``serving.md``. ``--quick`` runs short single points (a smoke run, not
a record). Needs ``make models`` and the esteira-kserve environment (``make kserve-runtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

import model_handlers
from benchmarks.load import Point, median_point, run_point, wrk_binary
from benchmarks.report import write_markdown
from esteira.local.server import DEFAULT_VMARGS as ESTEIRA_UP_VMARGS
from esteira.packaging.upstream import fits_unix_socket
from esteira.vocabulary import (
    COLLECTOR_RECORDS_PATH,
    ENV_BATCH_SIZE,
    ENV_IDLE_POLL_US,
    ENV_LOG_MODE,
    ENV_LOG_URL,
    ENV_WORKERS,
)
from model_handlers.inference_log import DROPPED_TOTAL
from model_handlers.metrics import BATCH_SIZE
from model_handlers.optimize import Outcome
from tests.support.demo_package import package_demo
from tests.support.torchserve import QUICK_START_VMARGS, ModelArchive, TorchServe, build_mar, free_port

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = REPO / "build" / "models"
DEMO = REPO / "build" / "demo"
OPTIMIZE_ROUNDS = 3  # the iris handler as loaded and optimized, in turns
LONE_EXTRA_REPEATS = 2  # c=1 points swing most with what else the machine runs
# Warm-up: points at the top concurrency until throughput stops rising. TorchServe's JIT compiler was still
# busy 25 s into a run (a third of the frontend's CPU), and its throughput rises in steps with flat stretches
# between them (844, 1,527, 1,621, 1,859, 2,171 req/s in 5 s points), so a JVM gets a floor of load first.
WARM_UP_POINT_SECONDS = 2.0
WARM_UP_LIMIT_SECONDS = 60.0
JVM_WARM_UP_SECONDS = 30.0
STILL_RISING = 1.05  # a point this much above every earlier one means the server is still warming up
RUNTIME_PYTHON = REPO / ".tools" / "kserve-runtime-venv" / "bin" / "python"
STOCK_HANDLER = REPO / "benchmarks" / "stock_handler.py"
STOCK_IMAGE_HANDLER = REPO / "benchmarks" / "stock_image_handler.py"
BATCHED = {"batchSize": 8, "maxBatchDelay": 10, "minWorkers": 1, "maxWorkers": 1}
UNBATCHED = {"batchSize": 1, "minWorkers": 1, "maxWorkers": 1}
TWO_WORKERS = 2  # esteira-kserve's processes, TorchServe's workers: one per core of the table's machine
BATCHED_TWO_WORKERS = BATCHED | {"minWorkers": TWO_WORKERS, "maxWorkers": TWO_WORKERS}
IDLE_GAP_SECONDS = 0.001  # a lone caller's server sleeps between requests; how a request fares after a sleep
# Other Python work between two batches, as a server's HTTP for the batch's requests is: JSON-encoding a document
# of this many small entries (about half a millisecond here, what 8 to 16 requests' HTTP costs esteira-kserve).
OTHER_WORK_ENTRIES = 800
IDLE_POLL_US = 200  # Linux's haltpoll default for a guest's poll before it halts
JOINED = 8  # requests the pod's front joins in one, as the entrypoint does for a model packaged with batches of 8
JOIN_DELAY_MS = 5  # a ModelDeployment's batching.maxBatchDelayMs for the joining front that waits for company
COALESCED = 8  # instances in the one request that stands for as many callers' requests made into one
V1_PATH = "/v1/models/{}:predict"
V2_PATH = "/v2/models/{}/infer"


@dataclass(frozen=True)
class Target:
    """One row of the table: which server (a key of the run's recipes), what to call, with which body."""

    key: str
    title: str
    server: str
    path: str
    body: str  # a key of Bodies


def _iris(key: str, title: str, server: str, model: str = "iris", body: str = "iris-v1", path: str = V1_PATH) -> Target:
    return Target(key, title, server, path.format(model), body)


def _digits(key: str, title: str, server: str, model: str) -> Target:
    return Target(key, title, server, V1_PATH.format(model), "digits-v1")


# The rows a target compares run in one group: every server of the group is up at once and their points
# alternate (at each concurrency, round r of every row before round r+1 of any, every other round in reverse
# order), so a swing of this host's speed, which moved rows measured minutes apart two- to fivefold, falls on
# both sides of a ratio alike. Within a group, the two rows of each ratio stand close together.
GROUPS: dict[str, tuple[Target, ...]] = {
    "tabular": (
        _iris("kserve-stock", "KServe model server + minimal kserve.Model, no batching", "kserve-stock"),
        _iris(
            "router+esteira-kserve",
            "esteira up router joining up to 8 requests -> esteira-kserve (on its Unix socket, as esteira up)",
            "router:esteira-kserve:iris-1.0.0",
        ),
        _iris("router+http-ceiling", "esteira up router -> bare HTTP server", "router:bare"),
        _iris(
            "esteira-kserve-poll",
            f"esteira-kserve, idle poll up to {IDLE_POLL_US} us after a lone request",
            "esteira-kserve-poll:iris-1.0.0",
        ),
        _iris("http-ceiling", "bare HTTP server, fixed JSON (uvicorn + Starlette)", "bare"),
        _iris("esteira-kserve", "esteira-kserve, adaptive batching (max 8)", "esteira-kserve:iris-1.0.0"),
        _iris(
            "esteira-kserve-optimized",
            "esteira-kserve, the model optimized at load (`optimize` in esteira-model.json)",
            "esteira-kserve-optimized:iris-1.0.0",
        ),
        _iris(
            "esteira-kserve-w2",
            f"esteira-kserve, {TWO_WORKERS} worker processes (`ESTEIRA_WORKERS`)",
            "esteira-kserve-w2:iris-1.0.0",
        ),
        _iris("ts-esteira-b8", "TorchServe + Esteira handler, batch 8 / 10 ms", "ts:iris"),
        _iris("ts-stock-b8", "TorchServe + stock handler, batch 8 / 10 ms", "ts:iris_stock_b8", "iris_stock_b8"),
        _iris(
            "ts-esteira-b8-w2", f"TorchServe + Esteira handler, batch 8, {TWO_WORKERS} workers", "ts:iris_w2", "iris_w2"
        ),
        _iris("ts-esteira-b8-nolog", "TorchServe + Esteira handler, batch 8, inference log off", "ts-nolog:iris"),
        _iris(
            "router-joining+ts-esteira",
            "esteira up router joining up to 8 requests -> TorchServe + Esteira unbatched (as esteira up runs it)",
            "router-joining:ts:iris_b1",
            "iris_b1",
        ),
        _iris("front+ts-esteira-b8", "a TorchServe pod's port: the front -> TorchServe + Esteira, b8", "front:ts:iris"),
        _iris(
            "front-joining+ts-esteira",
            "a TorchServe pod's port: the front joining up to 8 requests -> TorchServe + Esteira unbatched",
            "front-joining:ts:iris_b1",
            "iris_b1",
        ),
        _iris(
            "ts-esteira-b8-quick-jvm",
            "TorchServe + Esteira, batch 8, the tests' quick-start JVM (C1 compiler only)",
            "ts-quick-jvm:iris",
        ),
        _iris(
            "esteira-kserve-stack",
            "esteira-kserve's server alone: the handler replaced by a fixed answer",
            "esteira-kserve-stack:iris-1.0.0",
        ),
        _iris("esteira-kserve-b1", "esteira-kserve, batching off", "esteira-kserve-b1:iris-1.0.0"),
        _iris(
            "esteira-kserve-v2",
            "esteira-kserve, adaptive batching, v2",
            "esteira-kserve:iris-1.0.0",
            body="iris-v2",
            path=V2_PATH,
        ),
        _iris("ts-esteira-b8-v2", "TorchServe + Esteira handler, batch 8, v2", "ts:iris", body="iris-v2", path=V2_PATH),
    ),
    "tabular-b1": (
        _iris("ts-stock-b1", "TorchServe + stock handler, batch 1", "ts:iris_stock_b1", "iris_stock_b1"),
        _iris("ts-esteira-b1", "TorchServe + Esteira handler, batch 1", "ts:iris_b1", "iris_b1"),
        _iris(
            f"ts-esteira-b1-x{COALESCED}",
            f"TorchServe + Esteira handler, batch 1, {COALESCED} instances a request (requests a second: x"
            f"{COALESCED} for predictions)",
            "ts:iris_b1",
            "iris_b1",
            body=f"iris-v1-x{COALESCED}",
        ),
        _iris(
            "ts-esteira-b1-nolog",
            "TorchServe + Esteira handler, batch 1, inference log off",
            "ts-nolog:iris_b1",
            "iris_b1",
        ),
    ),
    "image-b8": (
        _digits(
            "ts-stock-image-b8",
            "TorchServe + stock handler, digits image, batch 8 / 10 ms",
            "ts:digits_stock_b8",
            "digits_stock_b8",
        ),
        _digits(
            "ts-esteira-image-b8", "TorchServe + Esteira handler, digits image, batch 8 / 10 ms", "ts:digits", "digits"
        ),
        _digits(
            "esteira-kserve-image",
            "esteira-kserve, digits image, adaptive batching",
            "esteira-kserve:digits-1.0.0",
            "digits",
        ),
    ),
    "image-b1": (
        _digits(
            "ts-stock-image-b1",
            "TorchServe + stock handler, digits image, batch 1",
            "ts:digits_stock_b1",
            "digits_stock_b1",
        ),
        _digits(
            "ts-esteira-image-b1", "TorchServe + Esteira handler, digits image, batch 1", "ts:digits_b1", "digits_b1"
        ),
    ),
}
IN_PROCESS = "in-process"  # the in-process ceilings, a phase of their own for --only


@dataclass
class Running:
    """A started server: its URL and the processes whose CPU counts as the server's."""

    url: str
    pids: list[int] = field(default_factory=list)
    warm_up_floor: float = 0.0  # seconds of load before its throughput is trusted to have settled
    management: str = ""  # a TorchServe's management address
    metrics: str = ""  # where Esteira's handler in it reports the inference records it dropped
    hop: str = ""  # where a router in front reaches it, when not at ``url`` (esteira up: esteira-kserve's socket)
    batches: str = ""  # where its batcher's sizes can be read (``esteira_batch_size``, flushed on every scrape)
    log: Path | None = None  # what it writes


Bodies = dict[str, tuple[Path, str]]


def write_bodies(work: Path) -> Bodies:
    """One-instance requests for each model and protocol (what a single caller typically sends), and one of
    ``COALESCED`` iris instances (what callers' requests made into one would be)."""
    iris = json.loads((DEMO / "requests" / "iris-v1.json").read_text())["instances"][0]
    digits = json.loads((DEMO / "requests" / "digits-v1.json").read_text())["instances"][0]
    documents = {
        "iris-v1": {"instances": [iris]},
        f"iris-v1-x{COALESCED}": {"instances": [iris] * COALESCED},
        "iris-v2": {"inputs": [{"name": "input-0", "shape": [1, len(iris)], "datatype": "FP32", "data": iris}]},
        "digits-v1": {"instances": [digits]},
    }
    bodies: Bodies = {}
    for key, document in documents.items():
        path = work / f"{key}.json"
        path.write_text(json.dumps(document))
        bodies[key] = (path, "application/json")
    return bodies


def wait_http(url: str, process: subprocess.Popen[bytes], within: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {within:.0f} s")


@contextmanager
def process(command: list[str], probe: str, log: Path, env: dict[str, str] | None = None) -> Iterator[Running]:
    with log.open("wb") as out:
        started = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        wait_http(probe, started)
        yield Running(probe.split("/", 3)[0] + "//" + probe.split("/", 3)[2], [started.pid], log=log)
    finally:
        started.terminate()
        try:
            started.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait(10)


def bare_http(work: Path) -> AbstractContextManager[Running]:
    port = free_port()
    command = [str(RUNTIME_PYTHON), "-m", "benchmarks.bare_http", "--port", str(port)]
    return process(command, f"http://127.0.0.1:{port}/ready", work / "bare.log")


def kserve_stock(work: Path) -> AbstractContextManager[Running]:
    port = free_port()
    model = DEMO / "iris-1.0.0" / "model.pt"
    command = [str(RUNTIME_PYTHON), "-m", "benchmarks.kserve_stock", "--model-file", str(model)]
    command += ["--name", "iris", "--port", str(port)]
    return process(command, f"http://127.0.0.1:{port}/v2/health/ready", work / "kserve-stock.log")


@contextmanager
def esteira_kserve(
    work: Path,
    build: str,
    sink: RecordSink,
    batch_size: int | None = None,
    module: str = "model_handlers.kserve_server",
    idle_poll_us: int = 0,
    workers: int = 1,
    models: Path = MODELS,
) -> Iterator[Running]:
    """esteira-kserve with every feature on, as TorchServe's Esteira rows: inference logging to ``sink``; the
    packaged ``build`` under ``models``."""
    port = free_port()
    command = [str(RUNTIME_PYTHON), "-m", module, "--model-dir", str(models / build)]
    command += ["--work-dir", str(work / f"kserve-{build}"), "--http-port", str(port)]
    env = {ENV_LOG_MODE: "all", ENV_LOG_URL: sink.url}
    if batch_size:
        env[ENV_BATCH_SIZE] = str(batch_size)
    if idle_poll_us:
        env[ENV_IDLE_POLL_US] = str(idle_poll_us)
    if workers > 1:
        env[ENV_WORKERS] = str(workers)
    socket_path = work / f"esteira-kserve-{port}.sock"
    fits = fits_unix_socket(socket_path)
    if fits:  # as esteira up starts it: its router sends inference there
        command += ["--unix-socket", str(socket_path)]
    with process(command, f"http://127.0.0.1:{port}/v2/health/ready", work / f"esteira-kserve-{port}.log", env) as up:
        up.metrics, up.hop = f"{up.url}/metrics", f"unix:{socket_path}" if fits else ""
        # one process flushes its batch sizes when scraped; several workers' arrive within their flush interval
        up.batches = up.metrics if workers == 1 else ""
        yield up


def model_server_front(
    work: Path, ts: Running, build: str = "iris-1.0.0", join: int = 1, name: str = "", delay_ms: int | None = None
) -> AbstractContextManager[Running]:
    """The pod's front (``esteira.packaging.front``) before ``ts``, joining up to ``join`` requests in one, for the
    model TorchServe serves as ``name`` (default: the build's); its CPU is counted with TorchServe's, as a pod's
    is: both share the pod's CPUs."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.model_server_front", "--model-dir", str(MODELS / build)]
    command += ["--join", str(join)] + (["--model-name", name] if name else [])
    command += ["--delay-ms", str(delay_ms)] if delay_ms is not None else []
    metrics = ts.metrics.removesuffix("/metrics")
    command += ["--backend", ts.url, "--management", ts.management, "--metrics", metrics, "--port", str(port)]
    return process(command, f"http://127.0.0.1:{port}/v1/models", work / f"front-{port}.log")


@contextmanager
def router(work: Path, behind: Running, build: str = "iris-1.0.0", join: int = 1, name: str = "") -> Iterator[Running]:
    """esteira up's router in front of ``behind``, reaching it as esteira up would (its socket, else its URL),
    joining up to ``join`` requests in one before a TorchServe serving the model as ``name`` (default: the
    build's); the batches behind it are the server's."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.router_front", "--model-dir", str(MODELS / build)]
    command += ["--backend", behind.hop or behind.url, "--port", str(port), "--join", str(join)]
    command += ["--management", behind.management] if behind.management else []
    command += ["--model-name", name] if name else []
    with process(command, f"http://127.0.0.1:{port}/v1/models", work / f"router-{port}.log") as up:
        up.batches = behind.batches
        yield up


def batch_totals(metrics: str) -> tuple[float, float] | None:
    """(batches, requests in them) so far at a server's metrics URL; None where it has none or did not answer (the
    figure is an aside: a failed scrape must not end a run)."""
    if not metrics:
        return None
    try:
        with urllib.request.urlopen(metrics, timeout=10) as answer:
            return batch_totals_of(answer.read().decode())
    except OSError:
        return None


def batch_totals_of(exposition: str) -> tuple[float, float] | None:
    """(batches, requests in them) from the ``esteira_batch_size`` histogram in Prometheus's text format, every
    series added up; None without one."""
    totals = {"_count": 0.0, "_sum": 0.0}
    for line in exposition.splitlines():
        name, _, rest = line.partition("{")
        suffix = name.removeprefix(BATCH_SIZE)
        if suffix in totals and name != suffix:
            totals[suffix] += float(rest.rsplit(" ", 1)[1])
    return (totals["_count"], totals["_sum"]) if totals["_count"] else None


def mean_batch(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Requests per batch between two readings of :func:`batch_totals`."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return round((after[1] - before[1]) / (after[0] - before[0]), 2)


def optimize_verdict(log: Path | None) -> str | None:
    """What ``optimize`` came to in a server's log: the handler's line from "the model" on, if it wrote one."""
    if log is None or not log.exists():
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if "optimize is set in" in line]
    if not lines:
        return None
    return lines[-1].partition(": the model ")[2] or None


def archives(store: Path) -> list[str]:
    """Stock and Esteira archives of the demo models (tabular iris, image digits), batched and not; and Esteira's
    iris with two workers."""
    wanted = []
    for name, build, kind, stock in (
        ("iris", "iris-1.0.0", "tabular", STOCK_HANDLER),
        ("digits", "digits-1.0.0", "image", STOCK_IMAGE_HANDLER),
    ):
        model = DEMO / build / "model.pt"
        esteira = str(model_handlers.handler_file(kind))  # type: ignore[arg-type]
        extras = [DEMO / build / "esteira-model.json", DEMO / build / "reference-profile.json"]
        wanted += [
            ModelArchive(f"{name}_stock_b8", model, str(stock), model_config=BATCHED),
            ModelArchive(f"{name}_stock_b1", model, str(stock), model_config=UNBATCHED),
            ModelArchive(name, model, esteira, extras, model_config=BATCHED),
            ModelArchive(f"{name}_b1", model, esteira, extras, model_config=UNBATCHED),
        ]
        if name == "iris":  # beside esteira-kserve in as many processes
            wanted.append(ModelArchive(f"{name}_w2", model, esteira, extras, model_config=BATCHED_TWO_WORKERS))
    for archive in wanted:
        build_mar(archive, store)
    return [archive.name for archive in wanted]


class RecordSink:
    """Where Esteira's handlers send inference records during the benchmark: a collector stand-in on loopback
    that reads each batch and counts it, so logging costs the model server what it costs in production."""

    def __init__(self) -> None:
        sink = self

        class Receiver(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the connection open, as the collector does

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(size)
                with sink.lock:
                    sink.posts, sink.bytes = sink.posts + 1, sink.bytes + size
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                """Quiet: one line per batch of records is noise here."""

        self.lock = threading.Lock()
        self.posts = self.bytes = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{COLLECTOR_RECORDS_PATH}"
        threading.Thread(target=self.server.serve_forever, name="record-sink", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def torchserve(work: Path, store: Path, models: list[str], vmargs: str, sink: RecordSink | None) -> Iterator[Running]:
    """TorchServe with every Esteira feature on: inference logging (mode all, the default sample rate) to ``sink``;
    without a sink, logging is off (the rows that show what the rest of the handler costs)."""
    server = TorchServe(
        Path(tempfile.mkdtemp(prefix="ts-", dir=work)),
        store,
        models,
        env={ENV_LOG_MODE: "all", ENV_LOG_URL: sink.url} if sink else {},
        oip=True,
        metrics_config=model_handlers.metrics_config(),
        extra_properties={"vmargs": vmargs},
    )
    with server:
        pgid = server.pgid
        yield Running(
            f"http://127.0.0.1:{server.ports['inference']}",
            [pgid] if pgid else [],
            warm_up_floor=JVM_WARM_UP_SECONDS,
            management=f"http://127.0.0.1:{server.ports['management']}",
            metrics=f"http://127.0.0.1:{server.ports['metrics']}/metrics",
        )


def in_process_ceiling(seconds: float) -> dict[str, Any]:
    """JSON parse, tensor, forward, softmax and JSON dump of one v1 request, back to back in one thread."""
    body = (DEMO / "requests" / "iris-v1.json").read_text()
    instance = json.loads(body)["instances"][0]
    document = json.dumps({"instances": [instance]})
    model = torch.jit.load(str(DEMO / "iris-1.0.0" / "model.pt")).eval()
    count, began = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - began < seconds:
            rows = torch.tensor(json.loads(document)["instances"], dtype=torch.float32)
            json.dumps({"predictions": model(rows).softmax(dim=1).tolist()})
            count += 1
    return {"rps": round(count / (time.perf_counter() - began), 1), "threads": 1}


def in_process_handler(seconds: float, work: Path) -> dict[str, Any]:
    """Esteira's whole handler without a server (``InProcessHandler.run``, as esteira-kserve calls it): the same
    one-instance request, one at a time and in batches of 8; what is left of a server's time is its HTTP."""
    from prometheus_client import CollectorRegistry

    from model_handlers.inprocess import InProcessHandler, PrometheusMetrics
    from model_handlers.messages import RawRequest

    iris = json.loads((DEMO / "requests" / "iris-v1.json").read_text())["instances"][0]
    body = json.dumps({"instances": [iris]})
    request = RawRequest(body.encode(), {"content-type": "application/json", "content-length": str(len(body))})
    v2_body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, len(iris)], "datatype": "FP32", "data": iris}]})
    v2 = RawRequest(v2_body.encode(), {"content-type": "application/json", "content-length": str(len(v2_body))})
    handler = InProcessHandler(MODELS / "iris-1.0.0", work, PrometheusMetrics(CollectorRegistry()))
    rates = {size: requests_per_second(lambda n: handler.run([request] * n), size, seconds) for size in (1, 8)}
    v2_rates = {size: requests_per_second(lambda n: handler.run([v2] * n), size, seconds) for size in (1, 8)}
    document = [{"id": index, "name": str(index), "pair": [index, index + 1]} for index in range(OTHER_WORK_ENTRIES)]

    def one() -> None:
        handler.run([request])

    def eight() -> None:
        handler.run([request] * 8)

    def other_work() -> None:
        json.dumps(document)

    return {
        "batch_1_rps": rates[1],
        "batch_8_rps": rates[8],
        "v2_batch_1_rps": v2_rates[1],
        "v2_batch_8_rps": v2_rates[8],
        "threads": 1,
        "back_to_back_us": round(median_seconds(one) * 1e6, 1),
        "after_idle_us": round(median_seconds(one, after=lambda: time.sleep(IDLE_GAP_SECONDS)) * 1e6, 1),
        "idle_ms": IDLE_GAP_SECONDS * 1e3,
        "batch_8_after_other_work_us": round(median_seconds(eight, after=other_work, calls=2000) * 1e6 / 8, 1),
        "other_work_us": round(median_seconds(other_work) * 1e6, 1),
    }


def requests_per_second(run_batch: Callable[[int], Any], size: int, seconds: float) -> float:
    """Batches of ``size`` one-instance requests run back to back for ``seconds``, in requests a second."""
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        run_batch(size)
        count += size
    return round(count / (time.perf_counter() - began), 1)


def median_seconds(call: Callable[[], Any], after: Callable[[], Any] | None = None, calls: int = 1000) -> float:
    """The median time of ``call``, each run right ``after`` something else (untimed): back to back when there is
    nothing; after a sleep, as a lone caller's server runs a request; after other work, as a busy one runs a batch
    between its HTTP. Only what ran before it differs."""
    durations = []
    for _ in range(calls):
        if after is not None:
            after()
        began = time.perf_counter()
        call()
        durations.append(time.perf_counter() - began)
    return statistics.median(durations)


def in_process_image(seconds: float, work: Path) -> dict[str, Any]:
    """The digits image model without a server, one thread, one-image requests in batches of 1 and 8: the stock
    image handler's own methods (:mod:`benchmarks.stock_image_handler`, on the JSON TorchServe would decode for
    it) against Esteira's whole handler (``InProcessHandler.run``). Their gap is the image rows' handler gap."""
    from prometheus_client import CollectorRegistry

    from benchmarks.stock_image_handler import StockImageHandler
    from model_handlers.inprocess import InProcessHandler, PrometheusMetrics
    from model_handlers.messages import RawRequest

    body = json.dumps({"instances": [json.loads((DEMO / "requests" / "digits-v1.json").read_text())["instances"][0]]})
    stock = StockImageHandler()
    stock.model = torch.jit.load(str(DEMO / "digits-1.0.0" / "model.pt")).eval()

    def stock_batch(size: int) -> None:
        rows = [{"body": json.loads(body)} for _ in range(size)]
        for answer in stock.postprocess(stock.inference(stock.preprocess(rows))):
            json.dumps(answer)

    request = RawRequest(body.encode(), {"content-type": "application/json", "content-length": str(len(body))})
    # Loaded before either runs: it sets torch's intra-op threads for the process, so both run with the same.
    handler = InProcessHandler(MODELS / "digits-1.0.0", work, PrometheusMetrics(CollectorRegistry()))
    runs = {"stock": stock_batch, "esteira": lambda size: handler.run([request] * size)}
    rates = {
        f"{name}_batch_{size}_rps": requests_per_second(run_batch, size, seconds)
        for name, run_batch in runs.items()
        for size in (1, 8)
    }
    return {**rates, "threads": 1}


def in_process_optimize(seconds: float, work: Path) -> dict[str, Any]:
    """``"optimize": true`` (:mod:`model_handlers.optimize`) in process, one thread: Esteira's whole handler on the
    iris model as loaded and optimized, their rounds alternating (batches of 1 and 8); what the load-time check
    decides for the digits model; and, forward passes only, a CNN of the kind the rewrite is made for."""
    from prometheus_client import CollectorRegistry

    from model_handlers.inprocess import InProcessHandler, PrometheusMetrics
    from model_handlers.messages import RawRequest
    from model_handlers.optimize import example_inputs, optimize_for_serving

    iris = json.loads((DEMO / "requests" / "iris-v1.json").read_text())["instances"][0]
    body = json.dumps({"instances": [iris]})
    request = RawRequest(body.encode(), {"content-type": "application/json", "content-length": str(len(body))})

    def handler(model: str, folder: str) -> InProcessHandler:
        return InProcessHandler(MODELS / model, work / folder, PrometheusMetrics(CollectorRegistry()))

    as_loaded, optimized = handler("iris-1.0.0", "as-loaded"), handler("iris-1.0.0", "optimized")
    outcome = optimized.handler.optimize_model(8)
    rates: dict[str, list[float]] = {}
    for _ in range(OPTIMIZE_ROUNDS):
        for name, served in (("as_loaded", as_loaded), ("optimized", optimized)):
            for size in (1, 8):
                rate = requests_per_second(lambda n, h=served: h.run([request] * n), size, seconds / 2)
                rates.setdefault(f"{name}_batch_{size}_rps", []).append(rate)
    digits = handler("digits-1.0.0", "digits-optimized").handler.optimize_model(8)
    images = example_inputs(torch.zeros(1, 3, 64, 64), 8)
    _, cnn = optimize_for_serving(torch.jit.script(convolutional_net().eval()), run_on_cpu, images, torch.float32)
    return {
        **{key: statistics.median(values) for key, values in rates.items()},
        "rounds": OPTIMIZE_ROUNDS,
        "models": {"iris": outcome_figures(outcome), "digits": outcome_figures(digits), "cnn": outcome_figures(cnn)},
        "threads": torch.get_num_threads(),
    }


def convolutional_net() -> torch.nn.Module:
    """Five 3x3 convolutions with batch norm (seeded random weights and statistics), pooled to ten classes."""
    from torch import nn

    widths = [(3, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    layers: list[nn.Module] = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for index, (inputs, outputs) in enumerate(widths):
            norm = nn.BatchNorm2d(outputs)
            with torch.no_grad():
                norm.running_mean.uniform_(-0.1, 0.1)
                norm.running_var.uniform_(0.5, 1.5)
            layers += [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), norm, nn.ReLU()]
            if index in (0, 2):
                layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def outcome_figures(outcome: Outcome) -> dict[str, Any]:
    """Whether the optimized form was kept, and a forward pass's microseconds as loaded and optimized by batch."""
    return {
        "kept": outcome.kept,
        "forward_us": {
            str(t.instances): [round(t.model_seconds * 1e6, 1), round(t.optimized_seconds * 1e6, 1)]
            for t in outcome.timings
        },
        "reason": outcome.reason,
    }


def run_on_cpu(model: Any, batch: torch.Tensor) -> torch.Tensor:
    """A forward pass as the handler runs one on the CPU, without its conversions."""
    with torch.inference_mode():
        output: torch.Tensor = model(batch)
    return output


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    wrk = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "wrk",
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "gpu": "none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
    }


class Servers:
    """The servers of one group: each started when a row first needs it, all stopped together. A hop's key
    (``router:<key>``, ``front:<key>``) names the server it stands in front of, which it starts too."""

    def __init__(self, work: Path, store: Path, sink: RecordSink) -> None:
        self.work, self.store, self.sink = work, store, sink
        self._stack = ExitStack()
        self._running: dict[str, Running] = {}

    def get(self, key: str) -> Running:
        if key not in self._running:
            kind, _, rest = key.partition(":")
            running = self._stack.enter_context(self._start(kind, rest))
            if kind in (
                "front",
                "front-joining",
                "front-joining-delayed",
            ):  # a pod's CPU is the front's and TorchServe's together: they share its CPUs
                running = Running(running.url, running.pids + self.get(rest).pids)
            self._running[key] = running
        return self._running[key]

    def _start(self, kind: str, rest: str) -> AbstractContextManager[Running]:
        if kind == "bare":
            return bare_http(self.work)
        if kind == "kserve-stock":
            return kserve_stock(self.work)
        if kind == "router":  # before esteira-kserve on its socket, esteira up joins requests up to its batch
            behind = self.get(rest)
            return router(self.work, behind, join=JOINED if behind.hop else 1)
        if kind == "router-joining":  # ts:<the model's name>
            return router(self.work, self.get(rest), join=JOINED, name=rest.partition(":")[2])
        if kind == "front":
            return model_server_front(self.work, self.get(rest))
        if kind == "front-joining":  # ts:<the model's name>
            return model_server_front(self.work, self.get(rest), join=JOINED, name=rest.partition(":")[2])
        if kind == "front-joining-delayed":
            name = rest.partition(":")[2]
            return model_server_front(self.work, self.get(rest), join=JOINED, name=name, delay_ms=JOIN_DELAY_MS)
        if kind == "ts":
            return torchserve(self.work, self.store, [rest], ESTEIRA_UP_VMARGS, self.sink)
        if kind == "ts-nolog":
            return torchserve(self.work, self.store, [rest], ESTEIRA_UP_VMARGS, None)
        if kind == "ts-quick-jvm":
            return torchserve(self.work, self.store, [rest], QUICK_START_VMARGS, self.sink)
        if kind == "esteira-kserve":
            return esteira_kserve(self.work, rest, self.sink)
        if kind == "esteira-kserve-stack":
            return esteira_kserve(self.work, rest, self.sink, module="benchmarks.kserve_stack")
        if kind == "esteira-kserve-b1":
            return esteira_kserve(self.work, rest, self.sink, batch_size=1)
        if kind == "esteira-kserve-w2":
            return esteira_kserve(self.work, rest, self.sink, workers=TWO_WORKERS)
        if kind == "esteira-kserve-poll":
            return esteira_kserve(self.work, rest, self.sink, idle_poll_us=IDLE_POLL_US)
        if kind == "esteira-kserve-optimized":
            optimized = package_demo(rest, self.work / "optimized", optimize=True)
            return esteira_kserve(self.work, rest, self.sink, models=optimized.parent)
        raise ValueError(f"no recipe for a server {kind!r}")

    def dropped_records(self) -> int:
        """Inference records the group's servers dropped (a full queue): rows said to log every request must
        not have skipped any."""
        dropped = 0.0
        for running in self._running.values():
            if running.metrics:
                with urllib.request.urlopen(running.metrics, timeout=10) as answer:
                    text = answer.read().decode()
                dropped += sum(
                    float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(DROPPED_TOTAL + "{")
                )
        return round(dropped)

    def close(self) -> None:
        self._stack.close()


class Bench:
    """Runs groups of targets against their servers and collects the medians."""

    def __init__(
        self, bodies: Bodies, concurrencies: list[int], seconds: float, repeats: int, warm_up_floors: bool = True
    ) -> None:
        self.bodies, self.concurrencies, self.seconds, self.repeats = bodies, concurrencies, seconds, repeats
        self.warm_up_floors = warm_up_floors  # off for a smoke run
        self.rows: dict[str, dict[str, Any]] = {}

    def measure(self, group: str, servers: Servers, targets: Sequence[Target]) -> None:
        """Every row of ``group``, its server warmed first, their points in alternation (see ``GROUPS``)."""
        started = [(target, servers.get(target.server)) for target in targets]
        warmed = {target.key: self.warm_up(running, target) for target, running in started}
        runs: dict[str, dict[int, list[Point]]] = {target.key: {} for target in targets}
        sizes: dict[str, dict[int, list[float | None]]] = {target.key: {} for target in targets}
        medians: dict[str, dict[str, Any]] = {target.key: {} for target in targets}
        for concurrency in self.concurrencies:
            repeats = self.repeats + (LONE_EXTRA_REPEATS if concurrency == 1 and self.repeats > 1 else 0)
            for repeat in range(repeats):
                for target, running in started if repeat % 2 == 0 else started[::-1]:
                    body, content_type = self.bodies[target.body]
                    before = batch_totals(running.batches)
                    point = run_point(
                        running.url + target.path, body, content_type, concurrency, self.seconds, running.pids
                    )
                    runs[target.key].setdefault(concurrency, []).append(point)
                    size = mean_batch(before, batch_totals(running.batches))
                    sizes[target.key].setdefault(concurrency, []).append(size)
            for target, _ in started:
                point = median_point(runs[target.key][concurrency])
                medians[target.key][str(concurrency)] = {
                    **point.to_json(),
                    "runs_rps": [run.rps for run in runs[target.key][concurrency]],
                }
                median_run = [run.rps for run in runs[target.key][concurrency]].index(point.rps)
                mean = sizes[target.key][concurrency][median_run]
                if mean is not None:  # requests per batch in the median run, where the server says
                    medians[target.key][str(concurrency)]["mean_batch"] = mean
                print(
                    f"{target.key:28} c={concurrency:<3} {point.rps:>9.1f} req/s  p99 {point.p99_ms:>7.2f} ms  "
                    f"wrk {point.loadgen_cores:.2f} cores  server {point.server_cpu_us_per_request:.0f} us/req",
                    flush=True,
                )
        for target, running in started:
            self.rows[target.key] = {
                "title": target.title,
                "group": group,
                "path": target.path,
                "body": target.body,
                "warm_up_seconds": warmed[target.key],
                "points": medians[target.key],
            }
            verdict = optimize_verdict(running.log)
            if verdict:  # what the handler's load-time check decided, so the row says what it measured
                self.rows[target.key]["optimize"] = verdict

    def warm_up(self, running: Running, target: Target) -> float:
        """Load at the top concurrency for at least the server's floor, then until a point is no longer above
        the best before it, within a limit; returns the seconds it took."""
        body, content_type = self.bodies[target.body]
        url = running.url + target.path
        seconds = min(self.seconds, WARM_UP_POINT_SECONDS)
        floor = running.warm_up_floor if self.warm_up_floors else 0.0
        began, best = time.monotonic(), 0.0
        while True:
            rps = run_point(url, body, content_type, max(self.concurrencies), seconds, running.pids).rps
            elapsed = time.monotonic() - began
            settled = best and rps <= best * STILL_RISING and elapsed >= floor
            if settled or elapsed >= WARM_UP_LIMIT_SECONDS:
                return round(elapsed, 1)
            best = max(best, rps)


def run(quick: bool, out: Path, only: list[str] | None) -> dict[str, Any]:
    if not (MODELS / "iris-1.0.0").exists():
        raise SystemExit("run `make models` first")
    groups = {
        name: [target for target in targets if only is None or name in only or target.key in only]
        for name, targets in GROUPS.items()
    }
    if not RUNTIME_PYTHON.exists():  # the bare server, KServe's and esteira-kserve's rows run in it
        raise SystemExit("run `make kserve-runtime` first (the esteira-kserve environment)")
    seconds, repeats = (1.0, 1) if quick else (2.0, 5)
    concurrencies = [1, 32] if quick else [1, 8, 32]
    work = Path(tempfile.mkdtemp(prefix="esteira-bench-"))
    bench = Bench(write_bodies(work), concurrencies, seconds, repeats, warm_up_floors=not quick)
    results: dict[str, Any] = {
        "machine": machine(),
        "seconds_per_point": seconds,
        "repeats": repeats,
        "lone_extra_repeats": LONE_EXTRA_REPEATS if repeats > 1 else 0,
        "jvm_warm_up_floor_seconds": JVM_WARM_UP_SECONDS if bench.warm_up_floors else 0.0,
    }
    began = time.monotonic()
    sink = RecordSink()
    dropped = 0
    if only is None or IN_PROCESS in only:
        results["in_process"] = in_process_ceiling(seconds)
        results["in_process_handler"] = in_process_handler(seconds, work)  # unpacks the archive into work/iris
        results["in_process_image"] = in_process_image(seconds, work)
        results["in_process_optimize"] = in_process_optimize(seconds, work)
    store = work / "store"
    servers = [part for targets in groups.values() for target in targets for part in target.server.split(":")]
    if {"ts", "ts-quick-jvm"} & set(servers):
        archives(store)
    for name, targets in groups.items():
        if not targets:
            continue
        group_servers = Servers(work, store, sink)
        try:
            bench.measure(name, group_servers, targets)
            dropped += group_servers.dropped_records()
        finally:
            group_servers.close()
    sink.close()
    results["inference_log"] = {"sample_rate": 1.0, "posts": sink.posts, "bytes": sink.bytes, "dropped": dropped}
    results["rows"] = bench.rows
    results["wall_seconds"] = round(time.monotonic() - began)
    out.mkdir(parents=True, exist_ok=True)
    name = "serving-quick" if quick else "serving"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / f"{name}.md")
    if any(point["errors"] for row in bench.rows.values() for point in row["points"].values()):
        print(f"some points had errors: the servers' logs are kept in {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 s single points at c=1 and 32: a smoke run")
    names = [IN_PROCESS, *GROUPS, *(target.key for targets in GROUPS.values() for target in targets)]
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"some groups or rows only: {', '.join(names)}"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.quick, args.out, args.only)


if __name__ == "__main__":
    main()
