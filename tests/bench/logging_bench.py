"""`make bench`: what inference logging costs the handler, and how fast the collector ingests.

Handler: the time `InferenceLog.observe` adds per request inside the TorchServe worker (sampling, redaction,
encoding, queueing; sending happens on another thread), at sample rates 0, 0.1 and 1.0. Sender: the CPU the
sender thread spends per record posting to a sink in another process, in the collector's batches and as
binary-mode events one POST each. Collector: records
per second through POST /v1/records in the handlers' batches (``BATCH`` records), then labels for them through
POST /v1/labels (each one joined), on SQLite and, where PostgreSQL's initdb is present, on a PostgreSQL server
started for the run.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from esteira.collector.app import Collector, CollectorConfig
from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from model_handlers.inference_log import (
    BATCH,
    Exchange,
    InferenceLog,
    LogSettings,
    Outbox,
    Record,
    Revision,
    encode_batch,
    http_sender,
)
from model_handlers.protocol import Identity, Prediction
from tests.support.postgres import postgres_server
from tests.support.torchserve import free_port

REQUESTS = 20000


def handler_overhead(rate: float, redacted: frozenset[str]) -> float:
    """Microseconds per request that observe() (which encodes records for the collector) and the sender's joining
    add (the post itself is left out)."""
    outbox = Outbox(encode_batch, capacity=100000, linger=3600.0)  # its thread sleeps: the queue is drained below
    log = InferenceLog(
        LogSettings(url=f"http://sink{COLLECTOR_RECORDS_PATH}", sample_rate=rate, redact=redacted),
        Identity("iris", "1.0.0", "1"),
        outbox,
    )
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 8}).encode()
    answer = json.dumps({"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.9}}] * 8})
    predictions = [Prediction(label="setosa")] * 8
    started = time.perf_counter()
    for _ in range(REQUESTS // 8):
        exchanges = [
            Exchange({"x-request-id": uuid.uuid4().hex}, body, True, None, 200, predictions, answer) for _ in range(8)
        ]
        log.observe(None, exchanges)
        while len(outbox._queue) >= BATCH:  # what the sender thread joins
            encode_batch([outbox._queue.popleft() for _ in range(BATCH)])
    return (time.perf_counter() - started) / REQUESTS * 1e6


SINK = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *_):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""


def sender_cost(path: str, posts: int) -> float:
    """CPU microseconds per record the sender spends posting 8-instance request records to a loopback sink."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        send = http_sender(LogSettings(url=f"http://127.0.0.1:{port}{path}"))
        body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 8})
        revision = Revision.of({"specversion": "1.0", "source": "bench", "revision": "1"})
        records = [Record(revision, uuid.uuid4().hex, "request", "now", None, body, True) for _ in range(BATCH)]
        per_post = BATCH if path == COLLECTOR_RECORDS_PATH else 1
        started = time.process_time()
        for _ in range(posts):
            send(records[:per_post])
        return (time.process_time() - started) / (posts * per_post) * 1e6
    finally:
        sink.terminate()
        sink.wait(10)


def event(i: int) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"r{i}", "type": "org.kubeflow.serving.inference.response", "source": "b",
            "inferenceservicename": "iris", "namespace": "bench", "revision": "1", "predictions": '["setosa"]',
            "data": {"predictions": [{"label": "setosa"}]}}  # fmt: skip


async def ingest(database: str, batches: int = 10) -> tuple[float, float]:
    """Records per second through POST /v1/records, then labels per second for them through POST /v1/labels."""
    async with TestClient(TestServer(Collector(CollectorConfig(database)).app())) as client:
        rates = []
        for path, item in (("/v1/records", event), ("/v1/labels", label)):
            started = time.perf_counter()
            for b in range(batches):
                response = await client.post(path, json=[item(b * BATCH + i) for i in range(BATCH)])
                assert response.status == 200, await response.text()
            rates.append(batches * BATCH / (time.perf_counter() - started))
        return rates[0], rates[1]


def label(i: int) -> dict[str, object]:
    return {"deployment": "iris", "namespace": "bench", "requestId": f"r{i}", "label": "setosa"}


def main() -> None:
    print("Inference logging, handler side (observe() per request, 8-instance batches of 8 requests):")
    for rate in (0.0, 0.1, 1.0):
        print(f"  sample rate {rate:>4}: {handler_overhead(rate, frozenset()):7.1f} us per request")
    print(f"  sample rate  1.0, one field redacted: {handler_overhead(1.0, frozenset({'ssn'})):7.1f} us per request")
    print("Inference logging, the sender thread's CPU per record posted to a loopback sink:")
    print(f"  to the collector, {BATCH} records a post: {sender_cost(COLLECTOR_RECORDS_PATH, 20):7.1f} us")
    print(f"  to a plain CloudEvents URL, one event a post: {sender_cost('/events', 2000):7.1f} us")
    with tempfile.TemporaryDirectory() as scratch:
        database = f"sqlite:///{Path(scratch) / 'bench.db'}"
        print("Collector ingest, SQLite: {:,.0f} records/s, {:,.0f} labels/s".format(*asyncio.run(ingest(database))))
    try:
        with postgres_server() as url:
            print("Collector ingest, PostgreSQL: {:,.0f} records/s, {:,.0f} labels/s".format(*asyncio.run(ingest(url))))
    except BaseException as exc:  # no PostgreSQL here: the SQLite figure stands alone
        print(f"Collector ingest, PostgreSQL: not measured ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
