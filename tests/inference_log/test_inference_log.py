"""Inference logging at the source: deterministic sampling that pairs arms, redaction that never leaks, a
queue that never blocks inference and counts what it drops, retries with backoff."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from model_handlers.inference_log import (
    REDACTED,
    InferenceLog,
    LogSettings,
    Outbox,
    http_sender,
    redact,
    sampled,
)
from model_handlers.protocol import Identity, Prediction
from tests.support.waiting import eventually

SECRET = "TOP-SECRET-VALUE"
FIELDS = frozenset({"ssn", "email"})


def test_sampling_is_deterministic_and_pairs_arms() -> None:
    ids = [uuid.uuid4().hex for _ in range(20000)]
    stable = {i for i in ids if sampled(i, 0.1)}
    canary = {i for i in ids if sampled(i, 0.1)}  # another process, another revision: the same function of the id
    assert stable == canary
    assert 0.085 < len(stable) / len(ids) < 0.115
    assert {i for i in ids if sampled(i, 0.2)} >= stable  # a higher rate logs a superset
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


json_leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none())
payloads = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "ssn", "email", "name", "data", "inputs"]), inner, max_size=4),
        st.builds(
            lambda name, rest: {**rest, "name": name, "data": [SECRET if name == "ssn" else "public"]},
            st.sampled_from(["ssn", "x"]),
            st.dictionaries(st.sampled_from(["datatype", "shape"]), inner, max_size=2),
        ),
    ),
    max_leaves=30,
)


def _plant(value: Any) -> Any:
    """The secret under every redacted key too, so any leak shows in the output."""
    if isinstance(value, dict):
        return {k: SECRET if k in FIELDS else _plant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plant(v) for v in value]
    return value


def _has_redacted_names(value: Any) -> bool:
    if isinstance(value, dict):
        named = isinstance(value.get("name"), str) and value["name"] in FIELDS and "data" in value
        return named or any(k in FIELDS or _has_redacted_names(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_redacted_names(v) for v in value)


@settings(max_examples=300)
@given(payloads)
def test_redaction_never_leaks_at_any_depth(payload: Any) -> None:
    planted = _plant(payload)
    assert SECRET not in json.dumps(redact(planted, FIELDS))
    if not _has_redacted_names(planted):
        assert redact(planted, FIELDS) == json.loads(json.dumps(planted))  # nothing else changes


def test_v2_tensor_of_a_redacted_name_is_replaced() -> None:
    body = {
        "inputs": [{"name": "ssn", "datatype": "BYTES", "shape": [1], "data": [SECRET]}, {"name": "age", "data": [3]}]
    }
    assert redact(body, FIELDS) == {
        "inputs": [{"name": "ssn", "datatype": "BYTES", "shape": [1], "data": REDACTED}, {"name": "age", "data": [3]}]
    }


class Context:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.headers: dict[tuple[int, str], str] = {}
        self.metrics = None

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return {"x-request-id": self.ids[idx]}

    def set_response_header(self, idx: int, name: str, value: str) -> None:
        self.headers[(idx, name)] = value


def test_queue_never_blocks_inference_and_counts_drops() -> None:
    release = threading.Event()
    outbox = Outbox(lambda batch: release.wait(), capacity=10)  # a sink that hangs until released
    log = InferenceLog(LogSettings(url="http://sink", mode="all", redact=FIELDS), Identity("iris", "1", "2"), outbox)
    ids = [f"r{i}" for i in range(100)]
    body = [{"body": json.dumps({"instances": [{"ssn": SECRET, "a": 1}]}).encode()} for _ in ids]
    answers = [json.dumps({"predictions": [{"label": "setosa"}]})] * len(ids)
    outcomes = [(200, [Prediction(label="setosa")])] * len(ids)
    context = Context(ids)
    # 200 records into a queue of 10 while the sink hangs: observe must come back without the sink's release
    # (a deadline against a hang, not a measure of speed).
    caller = threading.Thread(target=log.observe, args=(context, body, answers, outcomes))
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "observe blocked on a full queue"
    assert outbox.dropped >= 200 - 10 - 100  # at most the queue and one batch in flight were kept
    release.set()


def test_records_carry_identity_predictions_and_redacted_inputs_and_retry_until_delivered() -> None:
    delivered: list[dict[str, Any]] = []
    failures = iter([True, True, False] + [False] * 100)

    def flaky(batch: list[dict[str, Any]]) -> None:
        if next(failures):
            raise ConnectionError("collector restarting")
        delivered.extend(batch)

    outbox = Outbox(flaky, backoff=0.01)
    log = InferenceLog(
        LogSettings(url="http://sink", redact=FIELDS, namespace="models", deployment="iris"),
        Identity("iris", "1.0.1", "3"),
        outbox,
    )
    log.observe(
        Context(["abc"]),
        [{"body": b'{"instances": [{"ssn": "1", "a": 2}]}'}],
        ['{"predictions": [0.5]}'],
        [(200, [Prediction(value=0.5)])],
    )
    eventually(lambda: len(delivered) == 2, 10, "both records delivered after two failed attempts")
    request, response = delivered
    assert request["type"] == "org.kubeflow.serving.inference.request" and request["id"] == "abc"
    assert request["data"] == {"instances": [{"ssn": REDACTED, "a": 2}]}
    assert (response["revision"], response["modelversion"], response["inferenceservicename"]) == ("3", "1.0.1", "iris")
    assert json.loads(response["predictions"]) == [0.5]
    assert outbox.dropped == 0


def test_the_sender_keeps_its_connection_reopens_a_closed_one_and_raises_on_errors() -> None:
    posts: list[tuple[int, list[dict[str, Any]]]] = []  # (client port: one per connection, records)

    class Collector(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts.append((self.client_address[1], records))
            self.send_response(500 if records[0]["id"] == "broken" else 200)
            self.send_header("Content-Length", "0")
            if len(posts) == 2:
                self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        send = http_sender(LogSettings(url=f"http://127.0.0.1:{server.server_address[1]}{COLLECTOR_RECORDS_PATH}"))
        for index in range(4):
            send([{"id": str(index)}])
        with pytest.raises(RuntimeError, match="HTTP 500"):
            send([{"id": "broken"}])
    finally:
        server.shutdown()
        server.server_close()
    assert [records[0]["id"] for _, records in posts] == ["0", "1", "2", "3", "broken"]
    ports = [port for port, _ in posts]
    assert ports[0] == ports[1] != ports[2] == ports[3] == ports[4]  # a new connection only after the close


def test_dropped_records_are_counted_on_esteira_kserves_registry() -> None:
    """esteira-kserve's metrics cache has the dropped-records counter, so a hung sink shows on /metrics."""
    from prometheus_client import CollectorRegistry

    from model_handlers.inference_log import DROPPED_TOTAL
    from model_handlers.inprocess import PrometheusMetrics

    release = threading.Event()
    outbox = Outbox(lambda batch: release.wait(), capacity=10)
    log = InferenceLog(LogSettings(url="http://sink", mode="request"), Identity("iris", "1", "2"), outbox)
    ids = [f"r{i}" for i in range(50)]
    context = Context(ids)
    registry = CollectorRegistry()
    context.metrics = PrometheusMetrics(registry)  # type: ignore[assignment]
    body = [{"body": json.dumps({"instances": [[1, 2]]}).encode()} for _ in ids]
    log.observe(
        context, body, [json.dumps({"predictions": [1]})] * len(ids), [(200, [Prediction(value=1.0)])] * len(ids)
    )
    release.set()
    assert outbox.dropped > 0
    assert registry.get_sample_value(DROPPED_TOTAL, {"ModelName": "iris", "Revision": "2"}) == outbox.dropped
