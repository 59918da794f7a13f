"""What the collector refuses, and how: text a database cannot store and predictions that are not finite fail
their own item (422) and never the batch; a data error from the database is the caller's (422), never "retry";
bad query parameters and bodies are a 400 naming what is wrong; and a join is timed when it happens."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from esteira.collector.app import Collector, CollectorConfig
from esteira.collector.model import Label, Record
from esteira.collector.store import Store, StoreRefused
from tests.collector.conftest import fresh_postgres_database
from tests.collector.test_collector import AUTH, event, label, post

NUL = "must not contain the NUL character (\\u0000): the database cannot store it"
HUGE = 10**400  # valid JSON, beyond any float


def answered(request_id: str, answer: Any) -> dict[str, Any]:
    """A response as KServe's own logger sends it: no predictions attribute, the model's answer as data."""
    e = event(request_id, "1", [])
    e.pop("predictions")
    e["data"] = answer
    return e


def value(request_id: str, number: Any) -> dict[str, Any]:
    return {"deployment": "iris", "namespace": "models", "requestId": request_id, "value": number}


async def test_a_multi_output_regressor_s_answer_is_stored_without_predictions(collector: TestClient) -> None:  # type: ignore[type-arg]
    """Rows of values (one an instance) join no label: refused, the handler would have dropped its records."""
    rows = {**event("rows", "1", []), "predictions": "[[1.5, 2.0], [0.5, 3.0]]"}
    status, body = await post(collector, "/v1/records", [rows])
    assert (status, body) == (200, {"stored": 1, "duplicates": 0, "joined": 0})
    assert (await post(collector, "/v1/labels", value("rows", [1.5, 0.5])))[1]["joined"] == 0


async def test_text_the_database_cannot_store_fails_its_own_item_not_the_batch(collector: TestClient) -> None:  # type: ignore[type-arg]
    batch = [
        event("e1", "1", ["a"]),
        {**event("e2", "1", ["a"]), "data": '{"text": "a\u0000b"}'},
        {**event("e3", "1", ["a"]), "data": '{"text": "\ud800"}'},
        event("e\u00004", "1", ["a"]),
    ]
    for stored in (1, 0):  # sent again (as its sender would), the good record is a duplicate, the bad still refused
        status, body = await post(collector, "/v1/records", batch)
        assert (status, body["stored"]) == (422, stored)
        assert body["errors"] == [
            {"index": 1, "error": f"data {NUL}"},
            {"index": 2, "error": "data must not contain a lone surrogate (\\ud800 to \\udfff): it is not UTF-8"},
            {"index": 3, "error": f"id {NUL}"},
        ]
    # A predicted label that is no UTF-8 would become a Prometheus label value once joined, and fail every scrape.
    surrogate = [event("e5", "1", ["\ud800"]), answered("e6", {"predictions": [{"label": "\ud800"}]})]
    status, body = await post(collector, "/v1/records", surrogate)
    assert status == 422 and [e["index"] for e in body["errors"]] == [0, 1], body
    status, body = await post(collector, "/v1/labels", [label("e1", "a"), label("a\u0000b", "a")])
    assert (status, body["stored"], body["joined"]) == (422, 1, 1)
    assert body["errors"] == [{"index": 1, "error": f"requestId {NUL}"}]
    entry = {"namespace": "models", "deployment": "iris", "reason": "Promoted"}
    status, body = await post(collector, "/v1/audit", [entry, {**entry, "message": "a\u0000b"}])
    assert (status, body["stored"]) == (422, 1)
    assert body["errors"] == [{"index": 1, "error": f"message {NUL}"}]


def test_a_value_postgresql_refuses_is_refused_not_unavailable(postgres_url: str) -> None:
    store = Store(fresh_postgres_database(postgres_url))
    try:
        with pytest.raises(StoreRefused, match="NUL"):
            store.add_records([Record("models", "iris", "1", "r1", "request", 1.0, "a\u0000b")], now=1.0)
        with pytest.raises(StoreRefused, match="LIMIT must not be negative"):
            store.audit("models", "iris", -1)
        assert store.add_records([Record("models", "iris", "1", "r1", "request", 1.0, "{}")], now=2.0)[0] == 1
    finally:
        store.close()


async def test_data_the_database_refuses_is_the_callers_error_never_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector(CollectorConfig(f"sqlite:///{tmp_path / 'collector.db'}"))

    def refuse(*args: object) -> None:
        raise StoreRefused("value out of range")

    monkeypatch.setattr(collector.store, "add_labels", refuse)
    async with TestClient(TestServer(collector.app())) as client:
        response = await client.post("/v1/labels", json=label("r1", "a"))
        assert (response.status, response.headers.get("Retry-After")) == (422, None)
        assert await response.json() == {"error": "the database refused the data: value out of range"}


async def test_a_prediction_that_is_not_finite_refuses_its_record(collector: TestClient) -> None:  # type: ignore[type-arg]
    batch = [
        answered("v1", {"predictions": [2.0]}),
        answered("nan", {"predictions": [math.nan]}),
        answered("inf", {"outputs": [{"name": "prediction", "datatype": "FP64", "shape": [1], "data": [math.inf]}]}),
        answered("huge", {"predictions": [HUGE]}),
        {**event("attribute", "1", []), "predictions": "[NaN]"},
    ]
    status, body = await post(collector, "/v1/records", batch)
    assert (status, body["stored"]) == (422, 1)
    assert body["errors"] == [
        {"index": 1, "error": "data.predictions must be finite numbers, got nan"},
        {"index": 2, "error": "data.outputs[prediction].data must be finite numbers, got inf"},
        {"index": 3, "error": f"data.predictions must be finite numbers, got {HUGE!r:.60}"},
        {"index": 4, "error": "predictions must be finite numbers, got nan"},
    ]
    status, body = await post(collector, "/v1/labels", [value("v1", 1.0), value("nan", 1.0), value("x", HUGE)])
    assert (status, body["stored"], body["joined"]) == (422, 2, 1)
    assert body["errors"] == [{"index": 2, "error": f"value must be finite numbers, got {HUGE!r:.60}"}]
    quality = await (await collector.get("/v1/quality?deployment=iris&namespace=models", headers=AUTH)).json()
    assert quality["1"]["mae"] == 1.0
    metrics = await (await collector.get("/metrics")).text()
    arm = 'deployment="iris",deployment_namespace="models",revision="1"'
    assert f"esteira_prediction_absolute_error_total{{{arm}}} 1.0" in metrics
    assert f"esteira_prediction_squared_error_total{{{arm}}} 1.0" in metrics


async def test_bad_query_parameters_are_400_naming_the_parameter(collector: TestClient) -> None:  # type: ignore[type-arg]
    limit = "limit must be a whole number from 0 to 9223372036854775807, got "
    epoch = "must be a time in seconds since the epoch, got "
    for path, error in [
        ("/audit?deployment=iris&limit=abc", f"{limit}'abc'"),
        ("/audit?deployment=iris&limit=-1", f"{limit}'-1'"),
        ("/audit?deployment=iris&limit=9223372036854775808", f"{limit}'9223372036854775808'"),
        ("/v1/export?deployment=iris&since=yesterday", f"since {epoch}'yesterday'"),
        ("/v1/export?deployment=iris&until=soon", f"until {epoch}'soon'"),
        ("/v1/export?deployment=iris&since=nan", f"since {epoch}'nan'"),
        ("/v1/quality?deployment=iris&window=99999999999999999999h",
         "window must be a duration such as 1h, got '99999999999999999999h'"),
        ("/v1/quality?deployment=ir%00is", "deployment must not contain the NUL character (\\u0000)"),
        ("/v1/quality?deployment=iris&namespace=%00", "namespace must not contain the NUL character (\\u0000)"),
    ]:  # fmt: skip
        response = await collector.get(path, headers=AUTH)
        assert (response.status, response.content_type) == (400, "application/json"), path
        assert (await response.json())["error"] == error
    assert (await collector.get("/audit?deployment=iris&limit=0", headers=AUTH)).status == 200


async def test_a_body_nested_too_deep_is_400_and_an_answer_nested_too_deep_has_no_predictions(
    collector: TestClient,  # type: ignore[type-arg]
) -> None:
    deep = "[" * 50_000  # far deeper than Python's recursion limit, well within the body limit
    for path in ("/v1/records", "/v1/labels", "/v1/audit"):
        response = await collector.post(path, data=deep, headers={**AUTH, "Content-Type": "application/json"})
        assert (response.status, response.content_type) == (400, "application/json"), path
        assert (await response.json())["error"].startswith("body is not JSON: maximum recursion depth exceeded")
    binary = {
        **AUTH,
        "ce-specversion": "1.0",
        "ce-type": "org.kubeflow.serving.inference.response",
        "ce-source": "test",
        "ce-inferenceservicename": "iris",
    }
    response = await collector.post("/v1/records", data=deep, headers={**binary, "ce-id": "b1"})
    assert (response.status, await response.json()) == (200, {"stored": 1, "duplicates": 0, "joined": 0})
    response = await collector.post(
        "/v1/records", data="{}", headers={**binary, "ce-id": "b2", "ce-predictions": "[" * 5_000}
    )
    assert response.status == 422
    assert (await response.json())["errors"] == [{"index": 0, "error": "predictions must be a JSON list"}]


def test_a_join_is_timed_when_it_happens_whichever_comes_first(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'collector.db'}")
    observed = 10.0  # when the truth was observed: long before the prediction was made or either arrived

    def truth(request_id: str) -> Label:
        return Label("models", "iris", request_id, "setosa", observed)

    def prediction(request_id: str) -> Record:
        return Record("models", "iris", "1", request_id, "response", 100.0, "{}", predictions=("setosa",))

    try:
        store.add_records([prediction("record-first")], now=100.0)
        _, label_second, _ = store.add_labels([truth("record-first")], now=200.0)
        store.add_labels([truth("label-first")], now=150.0)
        _, record_second, _ = store.add_records([prediction("label-first")], now=200.0)
        assert [(j.request_id, j.joined_at) for j in label_second + record_second] == [
            ("record-first", 200.0), ("label-first", 200.0)
        ]  # fmt: skip
        assert store.tallies("models", "iris", since=200.0)["1"].labelled == 2

        store.purge(before=observed + 1)  # labels go by their own time, joins by when they joined
        assert store.tallies("models", "iris", since=0.0)["1"].labelled == 2
        assert store.add_labels([truth("record-first")], now=300.0) == (1, [], {})  # purged: new again, joined before
    finally:
        store.close()
