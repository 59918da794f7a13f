"""Requests joined in one (``model_handlers.joined``): the framing, and the handler answering each joined request
on its own within one forward pass, with a real ``ts.context.Context``.

The same through a real TorchServe behind the pod's front is in tests/packaging/test_front_joined.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_handlers.base import EsteiraHandler
from model_handlers.joined import (
    JOINED_CONTENT_TYPE,
    JOINED_HEADER,
    Entry,
    FramingError,
    answer_entry,
    answer_of,
    frame,
    joined_count,
    request_entry,
    unframe,
)
from model_handlers.protocol import BINARY_HEADER
from model_handlers.tabular import TabularHandler
from tests.handlers.conftest import ContextFactory, ModelDir, json_headers
from tests.handlers.test_handler import Recording, load

JSON = {"content-type": "application/json"}


def test_entries_come_back_as_they_were_framed() -> None:
    entries = [request_entry(JSON, b'{"instances": [[1, 2, 3, 4]]}'), answer_entry(503, {"retry-after": "1"}, b"")]
    back = unframe(bytearray(frame(entries)), 2)
    assert back == entries
    assert answer_of(back[1]) == (503, {"retry-after": "1"}, b"")


@pytest.mark.parametrize(
    ("body", "count", "says"),
    [
        (frame([request_entry(JSON, b"{}")])[:-1], 1, "ends within its body"),
        (frame([request_entry(JSON, b"{}")])[:3], 1, "before its header's length"),
        (frame([request_entry(JSON, b"{}")]), 2, "entry 1: the body ends before its header's length"),
        (frame([request_entry(JSON, b"{}")]) + b"x", 1, "1 bytes follow the 1 entries"),
        (frame([Entry({}, b"")]).replace(b"{}", b"[]"), 1, "not a JSON object"),
        (frame([Entry({}, b"")]).replace(b"{}", b"{:"), 1, "its header is not JSON"),
        (b"".join((len(b"[" * 99_999).to_bytes(4, "big"), b"[" * 99_999, bytes(4))), 1, "nested too deeply"),
    ],
)
def test_a_body_that_does_not_hold_what_it_says_is_refused(body: bytes, count: int, says: str) -> None:
    with pytest.raises(FramingError, match=says):
        unframe(body, count)


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "\u00b2", "1" * 7, "9" * 5000])
def test_the_count_must_be_a_positive_number(value: str) -> None:
    with pytest.raises(FramingError, match=JOINED_HEADER):
        joined_count({JOINED_HEADER: value})
    assert joined_count({}) is None
    assert joined_count({JOINED_HEADER: b"3"}) == 3


@pytest.mark.parametrize("status", [True, 99, 101, 600, "200", None])
def test_an_answer_entry_holds_a_status_an_answer_can_have(status: object) -> None:
    with pytest.raises(FramingError, match="its status"):
        answer_of(Entry({"status": status, "headers": {}}, b""))


def joined_headers() -> dict[str, Any]:
    """A joined request's headers as TorchServe's worker passes them (its body bytes under ``body``)."""
    return {"body": {"content-type": JOINED_CONTENT_TYPE}, "content-type": JOINED_CONTENT_TYPE}


def with_count(headers: dict[str, Any], count: int) -> dict[str, Any]:
    return {**headers, JOINED_HEADER: str(count)}


@pytest.fixture
def recording(model_dirs: dict[str, ModelDir], make_context: ContextFactory) -> EsteiraHandler:
    handler = load(TabularHandler, model_dirs["tabular"], make_context)
    handler.model = Recording(handler.model)
    return handler


def test_each_joined_request_is_answered_on_its_own_in_one_forward_pass(
    recording: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    parts = [
        request_entry(JSON, json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()),
        request_entry(JSON, json.dumps({"instances": [[1, 2, 3]]}).encode()),  # one feature short
        request_entry(
            JSON,
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [6.0, 2.2, 5.0, 1.5]}]}
            ).encode(),
        ),
    ]
    headers = [with_count(joined_headers(), 3), json_headers(1)[0]]
    context = make_context(model_dirs["tabular"], headers=headers)
    answers = recording.handle(
        [{"body": bytearray(frame(parts))}, {"body": {"instances": [[5.9, 3.0, 5.1, 1.8]]}}], context
    )

    assert recording.model.calls == [4]  # the joined requests' good instances and the plain request's, together
    assert context.get_response_status(0)[0] == 200
    assert context.get_response_headers(0)[JOINED_HEADER] == "3"
    replies = [answer_of(entry) for entry in unframe(answers[0], 3)]
    assert [status for status, _, _ in replies] == [200, 400, 200]
    assert len(json.loads(replies[0][2])["predictions"]) == 2
    assert "expected 4 features, got 3" in json.loads(replies[1][2])["error"]
    v2 = json.loads(replies[2][2])
    assert v2["id"] == "req-0-2"  # each joined request has its own id, after the joined request's
    assert all(headers["content-type"] == "application/json" for _, headers, _ in replies)
    # The request of its own in the same batch is answered as before, on the batch's own processor.
    assert context.get_response_status(1)[0] == 200
    assert JOINED_HEADER not in context.get_response_headers(1)
    assert len(json.loads(answers[1])["predictions"]) == 1
    # The context holds the batch's own requests again, as TorchServe reads them after the handler.
    assert len(context.request_processor) == 2 and context.request_ids == {0: "req-0", 1: "req-1"}


def test_a_joined_request_for_binary_outputs_gets_its_own_binary_answer(
    recording: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [6.0, 2.2, 5.0, 1.5]}
    binary = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
    parts = [
        request_entry(JSON, json.dumps(binary).encode()),
        request_entry(JSON, json.dumps({"inputs": [tensor]}).encode()),
    ]
    context = make_context(model_dirs["tabular"], headers=[with_count(joined_headers(), 2)])
    answers = recording.handle([{"body": bytearray(frame(parts))}], context)
    (status, headers, body), (plain_status, plain_headers, plain) = [answer_of(e) for e in unframe(answers[0], 2)]
    assert (status, headers["content-type"]) == (200, "application/octet-stream")
    length = int(headers[BINARY_HEADER.lower()])
    assert json.loads(body[:length])["outputs"] and len(body) > length  # the JSON header, then the raw tensors
    assert (plain_status, plain_headers["content-type"]) == (
        200,
        "application/json",
    ) and BINARY_HEADER.lower() not in plain_headers
    assert json.loads(plain)["outputs"]


def test_a_joined_request_that_cannot_be_read_is_refused_alone(
    recording: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    headers = [with_count(joined_headers(), 2), json_headers(1)[0], with_count(joined_headers(), 0)]
    context = make_context(model_dirs["tabular"], headers=headers)
    short = frame([request_entry(JSON, b'{"instances": [[1, 2, 3, 4]]}')])  # says two, holds one
    answers = recording.handle(
        [{"body": bytearray(short)}, {"body": {"instances": [[1, 2, 3, 4]]}}, {"body": b""}], context
    )

    assert [context.get_response_status(idx)[0] for idx in range(3)] == [400, 200, 400]
    assert "entry 1" in json.loads(answers[0])["error"]
    assert JOINED_HEADER in json.loads(answers[2])["error"]
    assert recording.model.calls == [1]


def test_a_joined_request_of_json_decoded_by_torchserve_is_refused(
    recording: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    """A joined request sent as JSON reaches the handler decoded: its framing is gone, so it is refused."""
    context = make_context(model_dirs["tabular"], headers=[with_count(json_headers(1)[0], 1)])
    answers = recording.handle([{"body": {"instances": [[1, 2, 3, 4]]}}], context)
    assert context.get_response_status(0)[0] == 400
    assert JOINED_CONTENT_TYPE in json.loads(answers[0])["error"]
