"""Inference records from the handler itself: what each request of a batch logs, whichever server called it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ts.context import Context, RequestProcessor

from model_handlers.inference_log import InferenceLog, LogSettings, Outbox, Record, encode_batch
from model_handlers.tabular import TabularHandler
from tests.handlers.conftest import ModelDir
from tests.support.waiting import eventually

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
ROW = [5.1, 3.5, 1.4, 0.2]


def context(model_dir: ModelDir, headers: list[dict[str, str]]) -> Context:
    built = Context(model_dir.name, str(model_dir.path), model_dir.manifest, 8, None, "test", model_yaml_config={})
    built.request_processor = [RequestProcessor({"body": dict(h), **h}) for h in headers]
    built.request_ids = {idx: f"server-{idx}" for idx in range(len(headers))}
    return built


def logged(model_dir: ModelDir, rows: list[Any], headers: list[dict[str, str]]) -> tuple[list[Any], list[bytes]]:
    """The answers to one batch and the JSON batches its records were sent in."""
    handler = TabularHandler()
    handler.initialize(context(model_dir, [{}]))
    sent: list[bytes] = []

    def send(batch: list[Record]) -> None:
        sent.append(encode_batch(batch))

    handler.inference_log = InferenceLog(LogSettings(url="http://sink"), handler.identity, Outbox(send, linger=0.0))
    answers = handler.handle(rows, context(model_dir, headers))
    return answers, sent


def first_label(answer: str) -> Any:
    """The label a v1 or v2 answer gives its one instance."""
    document = json.loads(answer)
    if "outputs" in document:
        return next(o["data"][0] for o in document["outputs"] if o["name"] == "label")
    prediction = document["predictions"][0]
    return prediction["label"] if isinstance(prediction, dict) else prediction


def test_each_request_logs_its_body_as_it_came_and_its_answer(model_dirs: dict[str, ModelDir]) -> None:
    text = b'{ "instances":\n [[5.1, 3.5, 1.4, 0.2]] }'
    v2 = json.dumps({"id": "from-body", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ROW}]})
    rows = [
        {"body": text},  # bytes, as esteira-kserve passes them
        {"body": {"instances": [ROW]}},  # decoded, as TorchServe passes a JSON body
        {"body": v2.encode()},
        {"body": b'{"instances": [[1, 2]'},  # malformed: a 400, its request still logged
    ]
    json_type = {"Content-Type": "application/json"}
    headers = [{**json_type, "X-Request-Id": "r0"}, {**json_type, "ce-id": "r1"}, json_type, json_type]
    answers, sent = logged(model_dirs["tabular"], rows, headers)
    eventually(lambda: sum(len(json.loads(batch)) for batch in sent) == 7, 10, "four requests and three answers")
    assert text in b"".join(sent)  # byte for byte: not decoded and encoded again
    records = {(r["id"], r["type"].rsplit(".", 1)[1]): r for batch in sent for r in json.loads(batch)}
    assert set(records) == {(i, kind) for i in ("r0", "r1", "from-body") for kind in ("request", "response")} | {
        ("server-3", "request")
    }
    assert records[("r0", "request")]["data"] == json.loads(text)
    assert records[("r1", "request")]["data"] == {"instances": [ROW]}
    assert records[("from-body", "request")]["data"] == json.loads(v2)
    for index, request_id in enumerate(("r0", "r1", "from-body")):
        assert records[(request_id, "response")]["data"] == json.loads(answers[index])
        assert json.loads(records[(request_id, "response")]["predictions"]) == [first_label(answers[index])]
    assert records[("server-3", "request")]["data"] == {"binary_bytes": len(rows[3]["body"])}
