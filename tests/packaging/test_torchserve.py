"""The packaged demo iris model served by a real TorchServe 0.12, started the way Esteira's runtime starts it
(``python -m esteira.packaging.entrypoint``, which runs ``torchserve --foreground --ncs``), on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from esteira.packaging.config import parse_properties
from esteira.packaging.entrypoint import LOG_FLUSH_DIR
from esteira.packaging.healthcheck import check
from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from tests.packaging.support import package_cli
from tests.support.cloudevents_sink import RefusingUntilSet, predict_iris, sink
from tests.support.prerequisites import missing, require_file, require_module
from tests.support.waiting import eventually

torch = require_module("torch")
require_module("ts")
require_module("sklearn")
require_module("model_handlers.tabular")

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "build" / "models" / "iris-1.0.0"
# The sender's eighth and last attempt is then 2.5-5 s away: longer than TorchServe took to stop (2.4 s).
REFUSED_POSTS = 7
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def post_all(base: str, requests: list[tuple[Any, str]]) -> list[tuple[int, str | None]]:
    """Each request, all at once: one row of features as v1 or v2; each answer's status and first label."""
    import aiohttp

    async def one(session: aiohttp.ClientSession, features: Any, protocol: str) -> tuple[int, str | None]:
        if protocol == "v1":
            url, body = f"{base}/v1/models/iris:predict", {"instances": [features.tolist()]}
        else:
            tensor = {"name": "features", "shape": [1, len(features)], "datatype": "FP32", "data": features.tolist()}
            url, body = f"{base}/v2/models/iris/infer", {"inputs": [tensor]}
        async with session.post(url, json=body) as response:
            answer = await response.json(content_type=None)
        if response.status != 200:
            return response.status, None
        if protocol == "v1":
            return 200, answer["predictions"][0]["label"]
        return 200, {o["name"]: o for o in answer["outputs"]}["label"]["data"][0]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return list(await asyncio.gather(*(one(session, features, protocol) for features, protocol in requests)))


def sample_sum(exposition: str, family: str) -> float:
    """The sum of a family's samples, of every label set."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for metric in text_string_to_metric_families(exposition)
        for sample in metric.samples
        if sample.name == family
    )


@dataclass
class EntrypointServer:
    """The pod's entrypoint (and the TorchServe it runs) on loopback ports, ready."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    runtime_dir: Path


@contextlib.contextmanager
def entrypoint_server(model_dir: Path, tmp_path: Path, extra_env: dict[str, str]) -> Iterator[EntrypointServer]:
    """``python -m esteira.packaging.entrypoint`` serving ``model_dir``, once the pod's health check passes; both
    process groups (the entrypoint's and TorchServe's) are gone afterwards."""
    ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "grpc_management")}
    runtime_dir = tmp_path / "runtime"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TS_INFERENCE_ADDRESS": f"http://{HOST}:{ports['inference']}",
        "TS_MANAGEMENT_ADDRESS": f"http://{HOST}:{ports['management']}",
        "TS_METRICS_ADDRESS": f"http://{HOST}:{ports['metrics']}",
        "TS_GRPC_INFERENCE_PORT": str(ports["grpc"]),
        "TS_GRPC_MANAGEMENT_PORT": str(ports["grpc_management"]),
        "TS_OPEN_INFERENCE_PROTOCOL": "oip",
        "ESTEIRA_MODEL_DIR": str(model_dir),
        "ESTEIRA_RUNTIME_DIR": str(runtime_dir),
        **extra_env,
    }
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "esteira.packaging.entrypoint"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        config = runtime_dir / "config.properties"
        deadline = time.monotonic() + 180
        problems = ["not started"]
        while problems:
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not ready: {problems}\n" + log_path.read_text()[-3000:]
            time.sleep(1)
            if config.exists():
                problems = check(parse_properties(config.read_text()), env, timeout=2)
        yield EntrypointServer(server, ports, runtime_dir)
    finally:
        # The entrypoint runs TorchServe in a process group of its own: end both groups.
        pid_file = runtime_dir / "tmp" / ".model_server.pid"
        with contextlib.suppress(OSError, ValueError):
            os.killpg(os.getpgid(int(pid_file.read_text())), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason=missing("Java 17+ for TorchServe's frontend", "install a JDK"))
def test_runtime_serves_packaged_demo_iris(demo_models: tuple[Path, list[Any]], tmp_path: Path) -> None:
    from model_handlers.demo import datasets

    source = demo_models[0] / "iris-1.0.0"
    model_dir = tmp_path / "models"
    extra = [str(source / "esteira-model.json"), str(source / "reference-profile.json")]
    argv = ["--name", "iris", "--version", "1.0.0", "--handler", "tabular", "--model-file", str(source / "model.pt")]
    assert package_cli([*argv, "--extra-files", *extra, "--batch-size", "2", "--out", str(model_dir)]) == 0

    batching = {
        "ESTEIRA_BATCH_SIZE": "4",  # the operator's value wins over the archive's 2
        "ESTEIRA_MAX_BATCH_DELAY_MS": "5",
        "ESTEIRA_WORKERS": "2",  # model.workers, over the archive's 1
        "ESTEIRA_REVISION": "7",
    }
    with entrypoint_server(model_dir, tmp_path, batching) as running:
        ports, server = running.ports, running.process
        base = f"http://{HOST}:{ports['inference']}"
        (description,) = get(f"http://{HOST}:{ports['management']}/models/iris")
        # The front makes the batches (of up to 4, joined): TorchServe serves the model unbatched.
        assert description["batchSize"] == 1
        assert (description["minWorkers"], description["maxWorkers"], len(description["workers"])) == (2, 2, 2)

        data = datasets.iris()
        rows = data.x_test[:5]
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
            logits = torch.jit.load(str(source / "model.pt"))(torch.from_numpy(rows))
        expected = [data.labels[i] for i in logits.argmax(1)]
        v1 = post(f"{base}/v1/models/iris:predict", {"instances": rows.tolist()})
        assert [p["label"] for p in v1["predictions"]] == expected

        v2 = post(
            f"{base}/v2/models/iris/infer",
            {"inputs": [{"name": "features", "shape": [5, 4], "datatype": "FP32", "data": rows.ravel().tolist()}]},
        )
        outputs = {o["name"]: o for o in v2["outputs"]}
        assert outputs["label"]["data"] == expected
        assert get(f"{base}/v2/health/ready") == {"ready": True}

        # Many callers at once: those that come while TorchServe is busy are joined in one request to it, and
        # each caller gets its own answer (its own rows' labels, its own status; v1 and v2 alike).
        callers = [(index % len(data.x_test), "v1" if index % 3 else "v2") for index in range(96)]
        answers = asyncio.run(post_all(base, [(data.x_test[row], protocol) for row, protocol in callers]))
        with torch.inference_mode():
            every = torch.jit.load(str(source / "model.pt"))(torch.from_numpy(data.x_test)).argmax(1).tolist()
        assert answers == [(200, data.labels[every[row]]) for row, _ in callers]
        bad = asyncio.run(post_all(base, [(rows[0][:3], "v1"), (rows[0], "v1")]))
        assert bad[0][0] == 400 and bad[1] == (200, expected[0])

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{HOST}:{ports['metrics']}/metrics", timeout=10) as response:
                return str(response.read().decode())

        # The handler answered every caller's request (its counts written within a second); TorchServe was sent
        # fewer: some went joined.
        eventually(lambda: sample_sum(scrape(), "esteira_requests_total") == 2 + 96 + 2, 30, "every request counted")
        metrics = scrape()
        assert 'ModelName="iris",Revision="7"' in metrics  # the handlers' metrics, labelled from the environment
        assert sample_sum(metrics, "ts_inference_requests_total") < 2 + 96 + 2, metrics

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason=missing("Java 17+ for TorchServe's frontend", "install a JDK"))
def test_a_stopping_pod_posts_the_inference_records_its_workers_hold(tmp_path: Path) -> None:
    """SIGTERM to the pod's entrypoint while the collector refuses posts: TorchServe kills its workers with
    SIGKILL, so the entrypoint has them post what they hold first, and every record arrives."""
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    collector = RefusingUntilSet()
    ids = [f"stop-{index}" for index in range(20)]
    with sink(collector) as (url, posts):
        env = {
            "ESTEIRA_LOG_MODE": "request",
            "ESTEIRA_LOG_URL": url + COLLECTOR_RECORDS_PATH,
            "ESTEIRA_BATCH_SIZE": "1",
        }
        with entrypoint_server(IRIS, tmp_path, env) as running:
            predict_iris(f"http://{HOST}:{running.ports['inference']}", ids)
            eventually(lambda: len(posts) >= REFUSED_POSTS, 30, "the collector refusing the records' posts")
            collector.accepting.set()
            running.process.send_signal(signal.SIGTERM)
            assert running.process.wait(timeout=60) == 0
            flushed = list((running.runtime_dir / LOG_FLUSH_DIR).glob("*.flushed"))
    assert collector.delivered_ids() == set(ids)
    assert len(flushed) == 1, "the worker was not asked to flush, or did not say it had"
