"""The collector on SQLite and on a real PostgreSQL server: records, labels in any order, joins, quality,
per-item errors, auth, body limit, a database restart, audit trail, Parquet export."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient, TestServer

from esteira.collector.app import Collector, CollectorConfig
from tests.collector.conftest import TOKEN, drop_connections, fresh_postgres_database

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(request_id: str, revision: str, predictions: list[Any], kind: str = "response") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": request_id,
        "type": f"org.kubeflow.serving.inference.{kind}",
        "source": "test",
        "inferenceservicename": "iris",
        "namespace": "models",
        "revision": revision,
        "predictions": json.dumps(predictions),
        "data": {"predictions": [{"label": p} for p in predictions]},
    }


def request_event(request_id: str, revision: str, body: Any) -> dict[str, Any]:
    e = event(request_id, revision, [], kind="request")
    e.pop("predictions")
    e["data"] = body
    return e


async def post(client: TestClient, path: str, body: Any, **headers: str) -> tuple[int, Any]:  # type: ignore[type-arg]
    response = await client.post(path, json=body, headers={**AUTH, **headers})
    return response.status, await response.json()


def label(request_id: str, truth: Any) -> dict[str, Any]:
    return {"deployment": "iris", "namespace": "models", "requestId": request_id, "label": truth}


async def test_labels_join_in_any_order_and_only_once(collector: TestClient) -> None:  # type: ignore[type-arg]
    # r1 labelled before its record arrives, r2 after; r3 never labelled; r1 re-sent (a retry) and re-labelled.
    assert (await post(collector, "/v1/labels", label("r1", "setosa")))[0] == 200
    status, body = await post(
        collector,
        "/v1/records",
        [event("r1", "1", ["setosa"]), event("r2", "1", ["virginica"]), event("r3", "2", ["setosa"])],
        **{"Content-Type": "application/cloudevents-batch+json"},
    )
    assert status == 200 and body == {"stored": 3, "duplicates": 0, "joined": 1}
    status, body = await post(collector, "/v1/labels", {"labels": [label("r2", "versicolor"), label("r1", "setosa")]})
    assert body == {"stored": 1, "duplicates": 1, "joined": 1}
    status, body = await post(collector, "/v1/records", [event("r1", "1", ["setosa"])])
    assert body["duplicates"] == 1 and body["joined"] == 0
    quality = await (await collector.get("/v1/quality?deployment=iris&namespace=models", headers=AUTH)).json()
    assert quality == {"1": {"labelled": 2, "correct": 1, "accuracy": 0.5, "mae": 0.0}}
    metrics = await (await collector.get("/metrics")).text()
    arm = 'deployment="iris",deployment_namespace="models",revision="1"'
    assert f"esteira_labelled_predictions_total{{{arm}}} 2.0" in metrics
    assert f"esteira_correct_predictions_total{{{arm}}} 1.0" in metrics
    assert f'esteira_quality_class_recall{{class="setosa",{arm}}} 1.0' in metrics
    assert f'esteira_quality_class_precision{{class="virginica",{arm}}} 0.0' in metrics


async def test_a_label_that_does_not_fit_its_answer_is_refused_and_a_fitting_one_then_joins(
    collector: TestClient,  # type: ignore[type-arg]
) -> None:
    """Kept, a label of the wrong shape would never join, and a corrected one would be its duplicate."""
    assert (await post(collector, "/v1/records", [event("two", "1", ["setosa", "virginica"])]))[0] == 200
    status, body = await post(collector, "/v1/labels", [label("other", "setosa"), label("two", "setosa")])
    assert status == 422 and body["stored"] == 1
    assert body["errors"] == [{"index": 1, "error": "the truth has 1 answer(s) but the request had 2 prediction(s)"}]
    status, body = await post(collector, "/v1/labels", label("two", ["setosa", "setosa"]))
    assert (status, body) == (200, {"stored": 1, "duplicates": 0, "joined": 2})


async def test_an_answer_its_label_sent_first_does_not_fit_is_counted_unfit(
    collector: TestClient,  # type: ignore[type-arg]
) -> None:
    """The label came first (nothing to check it against), then an answer of two instances for its one truth:
    never joined, and said nowhere but here."""
    assert (await post(collector, "/v1/labels", label("two", "setosa")))[0] == 200
    assert (await post(collector, "/v1/records", [event("two", "1", ["setosa", "virginica"])]))[1]["joined"] == 0
    assert (await post(collector, "/v1/records", [event("one", "1", ["setosa"])]))[1]["joined"] == 0
    metrics = await (await collector.get("/metrics")).text()
    assert (
        'esteira_collector_unfit_answers_total{deployment="iris",deployment_namespace="models",revision="1"} 1.0'
        in (metrics)
    )


async def test_a_new_collector_process_counts_from_zero_what_it_joins(tmp_path: Path) -> None:
    """A new pod's series are born inside some window, which counts them whole: born holding every join the
    store kept, they made one window's labelled predictions days of them."""
    database = f"sqlite:///{tmp_path / 'collector.db'}"
    async with TestClient(TestServer(Collector(CollectorConfig(database, token=TOKEN)).app())) as client:
        assert (await post(client, "/v1/records", [event("r1", "1", ["setosa"])]))[0] == 200
        assert (await post(client, "/v1/labels", label("r1", "setosa")))[1]["joined"] == 1
        assert "esteira_labelled_predictions_total{" in await (await client.get("/metrics")).text()
    async with TestClient(TestServer(Collector(CollectorConfig(database, token=TOKEN)).app())) as client:
        assert "esteira_labelled_predictions_total{" not in await (await client.get("/metrics")).text()
        quality = await (await client.get("/v1/quality?deployment=iris&namespace=models", headers=AUTH)).json()
        assert quality["1"]["labelled"] == 1  # the store still says it


async def test_binary_mode_event_as_kserve_sends_it(collector: TestClient) -> None:  # type: ignore[type-arg]
    headers = {
        **AUTH,
        "ce-specversion": "1.0",
        "ce-id": "b1",
        "ce-type": "org.kubeflow.serving.inference.response",
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": "iris",
        "ce-namespace": "models",
        "ce-revision": "3",
        "Content-Type": "application/json",
    }
    # No predictions attribute (KServe's own logger): the v2 answer's label tensor is read instead.
    answer = {"outputs": [{"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
    response = await collector.post("/v1/records", data=json.dumps(answer), headers=headers)
    assert response.status == 200
    _, body = await post(collector, "/v1/labels", label("b1", ["a", "a"]))
    assert body["joined"] == 2


async def test_bad_items_get_their_reason_and_do_not_poison_the_batch(collector: TestClient) -> None:  # type: ignore[type-arg]
    status, body = await post(
        collector,
        "/v1/labels",
        [
            label("ok", "setosa"),
            {"deployment": "iris", "requestId": "x"},
            label("", "a"),
            {**label("v", 1), "value": 2},
        ],
    )
    assert status == 422 and body["stored"] == 1
    assert body["errors"] == [
        {"index": 1, "error": "give exactly one of label (classifiers) or value (regression)"},
        {"index": 2, "error": "requestId must be a non-empty string of at most 256 characters, got ''"},
        {"index": 3, "error": "give exactly one of label (classifiers) or value (regression)"},
    ]
    status, body = await post(
        collector, "/v1/records", [event("e1", "1", ["a"]), {**event("e2", "1", ["a"]), "type": "x"}]
    )
    assert status == 422 and body["stored"] == 1 and body["errors"][0]["index"] == 1
    assert "type must be org.kubeflow.serving.inference.request" in body["errors"][0]["error"]
    response = await collector.post("/v1/labels", data=b"{not json", headers=AUTH)
    assert response.status == 400 and "not JSON" in (await response.json())["error"]


async def test_auth_and_body_limit(collector: TestClient) -> None:  # type: ignore[type-arg]
    response = await collector.post("/v1/labels", json=label("a", "b"))
    assert response.status == 401
    response = await collector.post("/v1/labels", json=label("a", "b"), headers={"Authorization": "Bearer wrong"})
    assert response.status == 401
    assert (await collector.get("/metrics")).status == 200
    big = [label(f"id-{i}", "x" * 200) for i in range(400)]
    response = await collector.post("/v1/labels", json=big, headers=AUTH)
    assert response.status == 413 and "larger than" in (await response.json())["error"]
    quality = await (await collector.get("/v1/quality?deployment=iris&namespace=models", headers=AUTH)).json()
    assert quality == {}


async def test_a_database_restart_answers_503_and_the_next_call_is_stored(postgres_url: str) -> None:
    database = fresh_postgres_database(postgres_url)
    async with TestClient(TestServer(Collector(CollectorConfig(database, token=TOKEN)).app())) as client:
        assert (await post(client, "/v1/records", [event("r1", "1", ["setosa"])]))[0] == 200
        drop_connections(postgres_url, database)

        response = await client.post("/v1/labels", json=label("r1", "setosa"), headers=AUTH)
        assert response.status == 503 and response.headers["Retry-After"] == "1"
        assert (await response.json())["error"].startswith("database unavailable, retry: ")
        assert await post(client, "/v1/labels", label("r1", "setosa")) == (
            200, {"stored": 1, "duplicates": 0, "joined": 1}
        )  # fmt: skip


async def test_audit_trail_per_deployment(collector: TestClient) -> None:  # type: ignore[type-arg]
    entries = [
        {"namespace": "models", "deployment": "iris", "reason": "RevisionCreated", "message": "revision 2"},
        {"namespace": "models", "deployment": "other", "reason": "Promoted", "message": "x"},
        {"namespace": "models", "deployment": "iris", "reason": "RolledBack", "message": "accuracy=0.7",
         "warning": True, "actor": "alice", "details": {"accuracy": 0.7}},
    ]  # fmt: skip
    status, _ = await post(collector, "/v1/audit", entries)
    assert status == 200
    body = await (await collector.get("/audit?deployment=iris&namespace=models", headers=AUTH)).json()
    assert [(e["reason"], e["warning"], e["actor"]) for e in body["entries"]] == [
        ("RevisionCreated", False, ""),
        ("RolledBack", True, "alice"),
    ]
    assert body["entries"][1]["details"] == {"accuracy": 0.7}


async def test_an_audit_entry_resent_with_its_id_is_a_duplicate(collector: TestClient) -> None:  # type: ignore[type-arg]
    entry = {"namespace": "models", "deployment": "iris", "reason": "Promoted", "message": "revision 2", "id": "a1"}
    assert await post(collector, "/v1/audit", [entry]) == (200, {"stored": 1, "duplicates": 0, "joined": 0})
    assert await post(collector, "/v1/audit", [entry]) == (200, {"stored": 0, "duplicates": 1, "joined": 0})
    status, body = await post(collector, "/v1/audit", [{**entry, "id": 7}])
    assert status == 422 and "id must be a non-empty string" in body["errors"][0]["error"]
    body = await (await collector.get("/audit?deployment=iris&namespace=models", headers=AUTH)).json()
    assert [(e["reason"], e["id"]) for e in body["entries"]] == [("Promoted", "a1")]


async def test_parquet_export_of_labelled_predictions_with_their_inputs(collector: TestClient) -> None:  # type: ignore[type-arg]
    await post(collector, "/v1/records", [request_event("p1", "1", {"instances": [[1, 2]]}), event("p1", "1", ["b"])])
    await post(collector, "/v1/labels", label("p1", "a"))
    response = await collector.get("/v1/export?deployment=iris&namespace=models", headers=AUTH)
    assert response.status == 200
    table = pq.read_table(io.BytesIO(await response.read())).to_pylist()
    assert len(table) == 1
    row = table[0]
    assert (row["revision"], row["request_id"], json.loads(row["predicted"]), json.loads(row["actual"])) == (
        "1",
        "p1",
        "b",
        "a",
    )
    assert json.loads(row["request"]) == {"instances": [[1, 2]]}


async def test_a_class_answered_as_text_matches_its_label_sent_as_a_number_in_the_counters_too(
    collector: TestClient,  # type: ignore[type-arg]
) -> None:
    """The store scored "2" against 2 right; the counters the accuracy check reads said wrong, and the per-class
    gauges split the class in two ("2" predicted, "2.0" actual)."""
    assert (await post(collector, "/v1/records", [event("n", "1", ["2"])]))[0] == 200
    assert (
        await post(collector, "/v1/labels", {"deployment": "iris", "namespace": "models", "requestId": "n", "value": 2})
    )[1]["joined"] == 1
    metrics = await (await collector.get("/metrics")).text()
    arm = 'deployment="iris",deployment_namespace="models",revision="1"'
    assert f"esteira_correct_predictions_total{{{arm}}} 1.0" in metrics
    assert f'esteira_quality_class_precision{{class="2",{arm}}} 1.0' in metrics
    assert 'class="2.0"' not in metrics


def test_a_duration_that_is_not_one_is_refused_at_start_naming_its_option() -> None:
    """Taken, a bad retention ended the purge task at its first round and nothing was purged again."""
    with pytest.raises(ValueError, match=r"--retention: not a duration: '7 days'"):
        CollectorConfig("sqlite:///x.db", retention="7 days")
    with pytest.raises(ValueError, match=r"--quality-window: '0s' is not longer than zero"):
        CollectorConfig("sqlite:///x.db", quality_window="0s")
    run = subprocess.run(
        [sys.executable, "-m", "esteira.collector", "--retention", "week"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "--retention: not a duration: 'week'" in run.stderr


async def test_a_batch_resent_after_a_lost_answer_is_counted_stored_once(
    collector: TestClient,  # type: ignore[type-arg]
) -> None:
    for _ in range(2):
        assert (await post(collector, "/v1/records", [event("again", "1", ["setosa"])]))[0] == 200
    metrics = await (await collector.get("/metrics")).text()
    assert 'esteira_collector_accepted_total{kind="records"} 1.0' in metrics
