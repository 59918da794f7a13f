"""The real iris handler in a real TorchServe logs to the real collector on a real PostgreSQL server: labels
arrive early, late and shuffled; a killed collector loses nothing it acknowledged, the handler keeps serving
meanwhile, and what was logged during the outage arrives once the collector is back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.collector.conftest import TOKEN
from tests.support.net import free_port
from tests.support.prerequisites import require_file
from tests.support.torchserve import TorchServe, require_torchserve
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchserve-logging")]
MODEL = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
TRUTH = ["setosa", "virginica", "versicolor"]


class CollectorProcess:
    def __init__(self, database: str, port: int, token_file: Path) -> None:
        self.args = [sys.executable, "-m", "esteira.collector", "--database", database, "--host", "127.0.0.1",
                     "--port", str(port), "--token-file", str(token_file)]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: self.get("/healthz") is not None, 30, "the collector answers", tolerate=(OSError,))

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def collector(postgres_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    import psycopg

    name = "ts" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    database = postgres_url.rsplit("/", 1)[0] + "/" + name
    token = tmp_path / "token"
    token.write_text(TOKEN)
    process = CollectorProcess(database, free_port(), token)
    process.start()
    yield process
    if process.process is not None and process.process.poll() is None:
        process.process.terminate()
        process.process.wait()


def test_records_labels_outage_and_recovery(collector: CollectorProcess, tmp_path: Path) -> None:
    require_torchserve()
    require_file(MODEL / "model-store" / "iris.mar", "run `make models`")
    env = {
        "ESTEIRA_LOG_MODE": "all",
        "ESTEIRA_LOG_URL": collector.url + "/v1/records",
        "ESTEIRA_LOG_TOKEN": TOKEN,
        "ESTEIRA_LOG_REDACT": json.dumps(["instances"]),
        "ESTEIRA_DEPLOYMENT": "iris",
        "ESTEIRA_NAMESPACE": "models",
        "ESTEIRA_REVISION": "1",
    }
    ids = [uuid.uuid4().hex for _ in range(30)]
    truth = {rid: TRUTH[i % 3] for i, rid in enumerate(ids)}
    label = lambda rid: {"deployment": "iris", "namespace": "models", "requestId": rid, "label": truth[rid]}  # noqa: E731
    collector.post("/v1/labels", [label(rid) for rid in ids[:10]])  # early: before the requests exist
    with TorchServe(tmp_path / "ts", MODEL / "model-store", ["iris"], env=env) as server:

        def predict(rid: str, i: int) -> int:
            body = json.dumps({"instances": [ROWS[i % 3]]}).encode()
            headers = {"Content-Type": "application/json", "x-request-id": rid}
            return server.request("POST", "/v1/models/iris:predict", body, headers=headers).status

        assert [predict(rid, i) for i, rid in enumerate(ids)] == [200] * 30
        late = ids[10:20]
        random.Random(3).shuffle(late)
        collector.post("/v1/labels", [label(rid) for rid in late])  # late and shuffled
        quality = eventually(lambda: collector.get("/v1/quality?deployment=iris&namespace=models").get("1", {}).get("labelled") == 20 and collector.get("/v1/quality?deployment=iris&namespace=models"), 60, "20 labelled predictions")  # fmt: skip
        assert quality["1"]["accuracy"] == 1.0  # the good iris model on these three rows
        exported = eventually(
            lambda: collector.get("/v1/quality?deployment=iris&namespace=models&window=1h"), 5, "quality"
        )
        assert exported["1"]["correct"] == 20

        collector.kill()
        outage = [uuid.uuid4().hex for _ in range(10)]
        assert [predict(rid, i) for i, rid in enumerate(outage)] == [200] * 10  # inference goes on
        collector.start()  # same database, same port: the handler's retries deliver what waited
        collector.post("/v1/labels", [{"deployment": "iris", "namespace": "models", "requestId": rid, "label": TRUTH[i % 3]} for i, rid in enumerate(outage)])  # fmt: skip
        after = eventually(
            lambda: (q := collector.get("/v1/quality?deployment=iris&namespace=models"))["1"]["labelled"] == 30 and q,
            60,
            "the outage's records delivered and joined",
        )
        assert after["1"]["correct"] == 30
        metrics = server.metrics_text()
    assert "esteira_inference_log_dropped_total" not in metrics or "esteira_inference_log_dropped_total{" not in metrics
