"""The handlers inside a real TorchServe 0.12: every protocol, dynamic batching, per-request errors, metrics,
envelopes and load failures. The servers are started once per session (see conftest.servers)."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.handlers import models
from tests.handlers.conftest import BATCH_DELAY_MS, REVISION, Servers
from tests.support.torchserve import Response, TorchServe, process_group_alive

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("torchserve")]

Sample = tuple[str, frozenset[tuple[str, str]]]
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(server: TorchServe) -> dict[Sample, float]:
    """The Prometheus exposition as {(name, labels): value}."""
    samples: dict[Sample, float] = {}
    for line in server.metrics_text().splitlines():
        match = _SAMPLE.match(line)
        if line.startswith("#") or not match:
            continue
        labels = frozenset(_LABEL.findall(match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def metric(samples: dict[Sample, float], name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items() if sample == name and wanted <= sample_labels
    )


def concurrently(calls: Sequence[Callable[[], Response]]) -> list[Response]:
    """Run the calls in threads released together, so TorchServe can batch them."""
    barrier = threading.Barrier(len(calls))
    results: list[Response | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def scrape_after(server: TorchServe, before: dict[Sample, float], model: str, requests: int) -> dict[Sample, float]:
    """Scrape until the batch-size histogram accounts for ``requests`` more requests (the frontend reads the
    worker's metric lines asynchronously), or give the last scrape after a few seconds."""
    labels = {"ModelName": model, "Revision": REVISION}
    deadline = time.monotonic() + 10
    while True:
        after = scrape(server)
        added = metric(after, "esteira_batch_size_sum", **labels) - metric(before, "esteira_batch_size_sum", **labels)
        if added >= requests or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def batches_formed(before: dict[Sample, float], after: dict[Sample, float], model: str) -> bool:
    """Whether at least one handler call between two scrapes carried more than one request."""
    labels = {"ModelName": model, "Revision": REVISION}
    count = metric(after, "esteira_batch_size_count", **labels) - metric(before, "esteira_batch_size_count", **labels)
    total = metric(after, "esteira_batch_size_sum", **labels) - metric(before, "esteira_batch_size_sum", **labels)
    return total > count > 0


def features(i: int) -> list[float]:
    return [float(i % 5), float(16 - i) / 4, float(i % 3), 0.5 * i]


def assert_tabular_answer(result: dict[str, Any], row: list[float]) -> None:
    label, probabilities = models.expected_tabular(row)
    assert result["label"] == label
    assert list(result["probabilities"].values()) == pytest.approx(probabilities, rel=1e-5)


# --- protocols ---------------------------------------------------------------------------------------------


def test_oip_mode_is_on_for_the_main_server_only(servers: Servers) -> None:
    ready = servers.main.request("GET", "/v2/health/ready")
    assert (ready.status, ready.json()) == (200, {"ready": True})
    assert servers.kserve.request("GET", "/v2/health/ready").status == 404


def test_raw_protocol(servers: Servers) -> None:
    main = servers.main
    single = main.predict("tabular", [1, 2, 3, 4])
    assert single.status == 200
    assert single.headers.get("content-type") == "application/json"
    assert_tabular_answer(single.json(), [1, 2, 3, 4])
    listed = main.predict("tabular", {"data": [[1, 2, 3, 4], {"f0": 9, "f1": 0, "f2": 0, "f3": 0}]})
    assert listed.status == 200
    assert [item["label"] for item in listed.json()] == [models.expected_tabular([1, 2, 3, 4])[0], "alpha"]
    named = main.predict("tabular", {"f0": 0, "f1": 7, "f2": 0, "f3": 0})
    assert named.json()["label"] == "beta"
    regression = main.predict("regression", [[1, 1, 1, 1], [0, 0, 0, 1]])
    assert regression.json() == pytest.approx([models.expected_regression([1, 1, 1, 1]), 4.5])


def test_kserve_v1_protocol(servers: Servers) -> None:
    response = servers.main.predict_v1("tabular", {"instances": [[1, 2, 3, 4], [0, 0, 5, 0]]})
    assert response.status == 200
    predictions = response.json()["predictions"]
    assert_tabular_answer(predictions[0], [1, 2, 3, 4])
    assert predictions[1]["label"] == "gamma"


def test_open_inference_protocol_v2(servers: Servers) -> None:
    body = {
        "id": "req-1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[1, 2, 3, 4], [0, 6, 0, 0]]}],
    }
    response = servers.main.infer_v2("tabular", body)
    assert response.status == 200
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("tabular", "1.0", "req-1")
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["gamma", "beta"]}
    assert probabilities["shape"] == [2, 3]
    assert probabilities["data"][:3] == pytest.approx(models.expected_tabular([1, 2, 3, 4])[1], rel=1e-5)
    regression = servers.main.infer_v2(
        "regression", {"inputs": [{"name": "x", "shape": [4], "datatype": "INT64", "data": [1, 1, 1, 1]}]}
    )
    assert regression.json()["outputs"] == [
        {"name": "prediction", "datatype": "FP32", "shape": [1], "data": [pytest.approx(10.5)]}
    ]
    assert regression.json()["id"]  # TorchServe's request id when the caller sent none


def test_image_protocols(servers: Servers) -> None:
    main = servers.main
    raw = main.predict("image", raw=models.png("bright"), content_type="image/png")
    assert raw.status == 200
    assert raw.json()["label"] == "bright"
    assert [item["label"] for item in raw.json()["top_k"]] == ["bright", "checker"]
    encoded = main.predict("image", [models.b64(models.png("dark")), {"b64": models.b64(models.png("checker"))}])
    assert [item["label"] for item in encoded.json()] == ["dark", "checker"]
    v1 = main.predict_v1("image", {"instances": [{"b64": models.b64(models.png("checker", size=24, mode="RGB"))}]})
    assert v1.json()["predictions"][0]["label"] == "checker"
    images = [models.b64(models.png(kind)) for kind in ("dark", "bright")]
    v2 = main.infer_v2("image", {"inputs": [{"name": "img", "shape": [2], "datatype": "BYTES", "data": images}]})
    assert v2.status == 200
    assert v2.json()["outputs"][0] == {
        "name": "labels",
        "datatype": "BYTES",
        "shape": [2, 2],
        "data": ["dark", "checker", "bright", "checker"],
    }


# --- batching ----------------------------------------------------------------------------------------------


def _caller(main: TorchServe, i: int) -> tuple[Callable[[], Response], Callable[[Response], list[dict[str, Any]]]]:
    """Caller ``i``'s request (protocol and instance count vary) and how to read its answers back."""
    rows = [features(i)] if i % 2 else [features(i), features(i + 100)]
    if i % 3 == 0:
        return (lambda: main.predict("tabular", rows)), (lambda r: r.json())
    if i % 3 == 1:
        return (lambda: main.predict_v1("tabular", {"instances": rows})), (lambda r: r.json()["predictions"])
    body = {"id": f"c{i}", "inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}

    def read_v2(response: Response) -> list[dict[str, Any]]:
        answer = response.json()
        assert answer["id"] == f"c{i}"
        labels, probabilities = answer["outputs"]
        flat = probabilities["data"]
        return [
            {"label": lab, "probabilities": dict(zip(models.TABULAR_LABELS, flat[3 * k : 3 * k + 3], strict=True))}
            for k, lab in enumerate(labels["data"])
        ]

    return (lambda: main.infer_v2("tabular", body)), read_v2


def test_concurrent_callers_are_batched_and_each_gets_its_own_answers(servers: Servers) -> None:
    main = servers.main
    for _attempt in range(3):
        before = scrape(main)
        callers = [_caller(main, i) for i in range(16)]
        responses = concurrently([send for send, _ in callers])
        for i, ((_, read), response) in enumerate(zip(callers, responses, strict=True)):
            assert response.status == 200, response.text
            rows = [features(i)] if i % 2 else [features(i), features(i + 100)]
            answers = read(response)
            assert len(answers) == len(rows)
            for answer, row in zip(answers, rows, strict=True):
                assert_tabular_answer(answer, row)
        if batches_formed(before, scrape_after(main, before, "tabular", len(callers)), "tabular"):
            return
    pytest.fail(f"no handler call carried more than one request (batchSize 8, maxBatchDelay {BATCH_DELAY_MS} ms)")


def test_a_bad_request_in_a_batch_fails_alone(servers: Servers) -> None:
    main = servers.main
    for _attempt in range(3):
        before = scrape(main)
        bodies = [features(i) if i != 3 else [1.0, 2.0] for i in range(8)]
        responses = concurrently([functools.partial(main.predict, "tabular", body) for body in bodies])
        assert [r.status for r in responses] == [200, 200, 200, 400, 200, 200, 200, 200]
        assert responses[3].json() == {"error": "body: wrong shape: expected 4 features, got 2"}
        for i, response in enumerate(responses):
            if i != 3:
                assert_tabular_answer(response.json(), features(i))
        if batches_formed(before, scrape_after(main, before, "tabular", len(bodies)), "tabular"):
            return
    pytest.fail("the requests were never batched together")


# --- bad input ---------------------------------------------------------------------------------------------

BAD_INPUTS = [
    pytest.param("/predictions/tabular", b"{bad", "application/json", "malformed JSON", id="malformed-json"),
    pytest.param("/v1/models/tabular:predict", {"instances": [[1, 2, 3]]}, None, "wrong shape", id="wrong-shape"),
    pytest.param(
        "/v2/models/tabular/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]},
        None,
        "wrong dtype",
        id="wrong-dtype-v2",
    ),
    pytest.param("/predictions/tabular", [1, "two", 3, 4], None, "wrong dtype", id="wrong-dtype-raw"),
    pytest.param(
        "/v2/models/tabular/infer",
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]},
        None,
        "missing field 'inputs[0].data'",
        id="missing-v2-data",
    ),
    pytest.param(
        "/v1/models/tabular:predict",
        {"instancez": [[1, 2, 3, 4]]},
        None,
        "missing field 'instances'",
        id="missing-instances",
    ),
    pytest.param("/predictions/tabular", {"instances": [[1, 2, 3, 4]] * 9}, None, "too many instances", id="too-many"),
    pytest.param("/predictions/tabular", b"[1, 2, NaN, 4]", "application/json", "non-finite number", id="nan"),
    pytest.param("/predictions/tabular", b"", "application/json", "empty request body", id="empty"),
    pytest.param(
        "/predictions/image",
        b"\x00\x01 not an image",
        "application/octet-stream",
        "undecodable image",
        id="undecodable-image",
    ),
    pytest.param(
        "/v1/models/image:predict", {"instances": [{"b64": "%%%"}]}, None, "not valid base64", id="bad-base64"
    ),
]


@pytest.mark.parametrize(("path", "body", "content_type", "message"), BAD_INPUTS)
def test_bad_input_gets_400_naming_the_problem_then_service_goes_on(
    servers: Servers, path: str, body: Any, content_type: str | None, message: str
) -> None:
    main = servers.main
    if isinstance(body, bytes):
        response = main.post(path, raw=body, content_type=content_type)
    else:
        response = main.post(path, body)
    assert response.status == 400, response.text
    assert message in response.json()["error"]
    assert message in response.reason  # the status line carries it too
    model = "image" if "image" in path else "tabular"
    good = main.predict(model, [models.b64(models.png("dark"))] if model == "image" else [1, 2, 3, 4])
    assert good.status == 200


# --- metrics -----------------------------------------------------------------------------------------------


def test_metrics_carry_model_and_revision_labels(servers: Servers) -> None:
    main = servers.main
    assert main.predict("tabular", [0, 9, 0, 0]).status == 200
    assert main.predict("tabular", [0]).status == 400
    assert main.predict("image", raw=models.png("checker")).status == 200
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(main)
        tab = {"ModelName": "tabular", "Revision": REVISION}
        found = (
            metric(samples, "esteira_request_duration_seconds_count", **tab) >= 2
            and metric(samples, "esteira_requests_total", outcome="ok", **tab) >= 1
            and metric(samples, "esteira_requests_total", outcome="client_error", **tab) >= 1
            and metric(samples, "esteira_predictions_total", **{"class": "beta"}, **tab) >= 1
            and metric(
                samples, "esteira_predictions_total", ModelName="image", Revision=REVISION, **{"class": "checker"}
            )
            >= 1
            and metric(samples, "esteira_batch_size_count", **tab) >= 1
        )
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found, "\n".join(line for line in main.metrics_text().splitlines() if "esteira" in line)
    text = main.metrics_text()
    assert "# TYPE esteira_request_duration_seconds histogram" in text
    assert "# TYPE esteira_batch_size histogram" in text
    assert "# TYPE esteira_requests_total counter" in text
    assert "# TYPE esteira_predictions_total counter" in text
    buckets = [dict(labels) for name, labels in samples if name == "esteira_request_duration_seconds_bucket"]
    tabular_buckets = [b for b in buckets if b["ModelName"] == "tabular" and b["Revision"] == REVISION]
    assert {b["le"] for b in tabular_buckets} >= {"0.005", "0.1", "1.0", "10.0", "+Inf"}  # the client's defaults
    assert all(set(b) == {"ModelName", "Revision", "Hostname", "le"} for b in tabular_buckets)
    assert metric(samples, "ts_inference_requests_total", model_name="tabular") >= 2


# --- envelopes ---------------------------------------------------------------------------------------------


def test_kserve_envelope(servers: Servers) -> None:
    kserve = servers.kserve
    response = kserve.predict_v1("tabular_single", {"instances": [[1, 2, 3, 4], {"f0": 9, "f1": 0, "f2": 0, "f3": 0}]})
    assert response.status == 200
    predictions = response.json()["predictions"]
    assert_tabular_answer(predictions[0], [1, 2, 3, 4])
    assert predictions[1]["label"] == "alpha"
    images = kserve.predict_v1("image_single", {"instances": [{"b64": models.b64(models.png("checker"))}]})
    assert images.json()["predictions"][0]["label"] == "checker"
    wrong = kserve.predict_v1("tabular_single", {"instances": [[1, 2, 3]]})
    assert wrong.status == 400
    assert wrong.json() == {"predictions": [{"error": "instances[0]: wrong shape: expected 4 features, got 3"}]}
    missing = kserve.predict_v1("tabular_single", {"instancez": []})
    assert (missing.status, missing.json()) == (400, {"predictions": [{"error": "missing field 'instances'"}]})
    assert kserve.predict_v1("tabular_single", {"instances": [[1, 2, 3, 4]]}).status == 200


def test_kserve_envelope_breaks_dynamic_batching(servers: Servers) -> None:
    """TorchServe's kserve envelope reads only the first request of a batch, so a batch of two or more fails
    as a whole (503); Esteira's handler logs why. This is why Esteira runs TorchServe without an envelope."""
    kserve = servers.kserve
    for _attempt in range(3):
        calls = [functools.partial(kserve.predict_v1, "tabular", {"instances": [features(i)]}) for i in range(6)]
        statuses = [response.status for response in concurrently(calls)]
        assert set(statuses) <= {200, 503}
        if 503 in statuses:
            break
    else:
        pytest.fail("the requests were never batched together")
    deadline = time.monotonic() + 5
    while "service_envelope=kserve hands the handler only the first of the" not in kserve.log_text():
        assert time.monotonic() < deadline, "the handler did not explain the failure in the log"
        time.sleep(0.2)


def test_kservev2_envelope(servers: Servers) -> None:
    kservev2 = servers.kservev2
    body = {
        "id": "e1",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 9, 0, 0, 0]}],
    }
    response = kservev2.infer_v2("tabular_single", body)
    assert response.status == 200
    answer = response.json()
    assert answer["id"] == "e1"
    (output,) = answer["outputs"]
    assert output["name"] == "x"  # the envelope names the output after the input and flattens it
    assert output["shape"] == [6]
    assert output["data"][:3] == pytest.approx(models.expected_tabular([1, 2, 3, 4])[1], rel=1e-5)
    wrong = kservev2.infer_v2(
        "tabular_single", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a"]}]}
    )
    assert wrong.status == 400
    assert "wrong dtype" in wrong.reason
    assert "wrong dtype" in json.dumps(wrong.json())


# --- load failures -----------------------------------------------------------------------------------------


def test_broken_archives_never_become_ready_and_ping_fails(servers: Servers) -> None:
    broken = servers.broken
    deadline = time.monotonic() + 90
    while broken.request("GET", "/ping").status != 500:
        assert time.monotonic() < deadline, f"/ping stayed healthy:\n{broken.log_tail()}"
        assert not broken.model_ready("broken_weights")
        assert not broken.model_ready("broken_config")
        time.sleep(0.5)
    assert broken.request("GET", "/ping").json() == {"status": "Unhealthy"}
    for name in ("broken_weights", "broken_config"):
        statuses = broken.worker_statuses(name)
        assert statuses is not None  # registered ...
        assert "READY" not in statuses  # ... but never serving
    log = broken.log_text()
    assert "ModelLoadError: cannot load the model from 'model.pt': RuntimeError: PytorchStreamReader" in log
    assert "ConfigError: esteira-model.json: kind: Input should be 'tabular' or 'image'" in log
    pgid = broken.pgid
    assert pgid is not None
    broken.stop()
    assert not process_group_alive(pgid)  # launcher, JVM and workers are all gone


# --- fuzzing through the server ----------------------------------------------------------------------------

ROUTES = [
    "/predictions/tabular",
    "/v1/models/tabular:predict",
    "/v2/models/tabular/infer",
    "/predictions/image",
    "/v2/models/image/infer",
]
CONTENT_TYPES = ["application/json", "application/octet-stream", "text/plain", "application/x-www-form-urlencoded"]
# Finite floats stay within +-1e30: a valid instance near float32's limit can overflow inside the model, and a
# non-finite output is rightly a server error (500), which is not what this property is about.
json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(-1e30, 1e30) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)
shaped = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(max_size=4),
                    "shape": st.lists(st.integers(-1, 5), max_size=3),
                    "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "X"]),
                    "data": st.lists(
                        st.one_of(st.floats(-1e6, 1e6), st.integers(-300, 300), st.text(max_size=4)), max_size=12
                    ),
                }
            ),
            max_size=2,
        )
    }
) | st.fixed_dictionaries({"instances": st.lists(st.lists(st.floats(-1e6, 1e6), max_size=5), max_size=10)})
bodies = st.one_of(
    st.binary(max_size=300),
    json_bodies.map(lambda value: json.dumps(value).encode()),
    shaped.map(lambda value: json.dumps(value).encode()),
)


def _worker_pids(main: TorchServe) -> list[int]:
    pids = []
    for model in ("tabular", "image"):
        described = main.request("GET", f"/models/{model}", api="management").json()
        pids += [int(worker["pid"]) for worker in described[0]["workers"]]
    return pids


def test_random_bodies_get_200_or_4xx_never_5xx(servers: Servers) -> None:
    main = servers.main
    pids = _worker_pids(main)
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(route=st.sampled_from(ROUTES), body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
    def property_holds(route: str, body: bytes, content_type: str) -> None:
        response = main.post(route, raw=body, content_type=content_type)
        seen.append(response.status)
        assert response.status < 500, f"{response.status} {response.text}"
        if response.status >= 400:
            assert response.json()["error"]

    property_holds()
    assert 400 in seen
    assert _worker_pids(main) == pids  # no worker died and was replaced
    assert main.predict("tabular", [1, 2, 3, 4]).status == 200
