"""Request parsing and response formatting, without torch or TorchServe."""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_handlers.protocol import (
    BadRequest,
    Identity,
    InputSpec,
    ParsedRequest,
    Prediction,
    Protocol,
    V2Input,
    encode_binary,
    envelope_v2_payload,
    extract_body,
    format_response,
    parse_envelope_v1,
    parse_envelope_v2,
    parse_request,
    reason_phrase,
)
from tests.handlers.models import b64, png

TABULAR = InputSpec("tabular", n_features=4, feature_names=("f0", "f1", "f2", "f3"), max_instances=3)
UNNAMED = InputSpec("tabular", n_features=2, max_instances=3)
IMAGE = InputSpec("image", max_instances=2, max_body_bytes=10_000)
PNG = png("bright")
IDENTITY = Identity("iris", "2", "rev-1")


def bad(body: Any, spec: InputSpec = TABULAR, **kwargs: Any) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_request(body, spec, **kwargs)
    return caught.value.message


def v2(data: Any, shape: Any, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}


# --- raw ---------------------------------------------------------------------------------------------------


def test_raw_vector_is_one_instance_answered_alone() -> None:
    parsed = parse_request([1, 2.5, 3, 4], TABULAR)
    assert parsed == ParsedRequest(Protocol.RAW, ((1.0, 2.5, 3.0, 4.0),), single=True)


def test_raw_list_of_vectors_and_named_features_keeps_config_order() -> None:
    parsed = parse_request({"data": [[1, 2, 3, 4], {"f3": 4, "f2": 3, "f1": 2, "f0": 1}]}, TABULAR)
    assert parsed.protocol is Protocol.RAW
    assert not parsed.single
    assert parsed.instances == ((1.0, 2.0, 3.0, 4.0), (1.0, 2.0, 3.0, 4.0))


def test_raw_named_features_alone_and_bytes_json() -> None:
    parsed = parse_request(b'{"f0": 1, "f1": 2, "f2": 3, "f3": 4}', TABULAR)
    assert parsed.instances == ((1.0, 2.0, 3.0, 4.0),)
    assert parsed.single


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"data": [1, 2, 3]}, "data: wrong shape: expected 4 features, got 3"),
        ([[1, 2, 3, 4], [1, 2]], "body[1]: wrong shape: expected 4 features, got 2"),
        ([1, 2, "3", 4], "body[2]: wrong dtype: expected a number, got string"),
        ([1, 2, True, 4], "body[2]: wrong dtype: expected a number, got boolean"),
        ({"f0": 1, "f1": 2, "f2": 3}, "missing feature(s) ['f3']"),
        ({"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f9": 0}, "unknown feature(s) ['f9']"),
        ({"data": [1, 2, 3, 4], "x": 1}, "unexpected field(s) ['x'] next to 'data'"),
        ({"instancez": [[1, 2, 3, 4]]}, "missing field 'instances' (KServe v1), 'inputs' (v2) or 'data'"),
        ({}, "missing field 'instances'"),
        ([], "empty input: body is an empty list"),
        (None, "empty input: the body is JSON null"),
        (b'"text"', "body: expected a list of 4 numbers or named features, got string"),
        ([1, 2, float("nan"), 4], "body[2]: non-finite number nan is not allowed"),
        ([1, 2, float("inf"), 4], "non-finite number inf"),
        ([1, 2, 10**400, 4], "body[2]: number out of range"),
        ([1, 2, 1e39, 4], "body[2]: 1e+39 is out of range"),
        ([[1, 2, 3, 4]] * 4, "too many instances: more than 3 (max_instances)"),
    ],
)
def test_raw_tabular_problems_are_named(body: Any, expected: str) -> None:
    assert expected in bad(body)


def test_named_features_need_a_model_with_names() -> None:
    assert "no feature names; send a list of 2 numbers" in bad({"data": [{"a": 1, "b": 2}]}, UNNAMED)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{bad", "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b'{"instances": [1,', "malformed JSON: Expecting value at line 1 column 18"),
        (b"\xff\xfe{", "malformed JSON: the body is not UTF-8 text"),
        (b"[" * 100_000, "malformed JSON"),
        (b"", "empty request body"),
        (b"   \n", "empty request body"),
        ("not json", "malformed JSON"),
    ],
)
def test_malformed_bodies(body: Any, expected: str) -> None:
    assert expected in bad(body)


def test_body_size_limit_counts_bytes_or_the_content_length() -> None:
    assert "the request body of 10001 bytes exceeded the limit of 10000 bytes" in bad(b"x" * 10_001, IMAGE)
    assert "the request body of 20000 bytes" in bad({"instances": [b64(PNG)]}, IMAGE, body_size=20_000)


# --- KServe v1 ---------------------------------------------------------------------------------------------


def test_v1_instances() -> None:
    parsed = parse_request({"instances": [[1, 2, 3, 4], {"f0": 0, "f1": 0, "f2": 0, "f3": 1}], "id": "r1"}, TABULAR)
    assert parsed.protocol is Protocol.V1
    assert parsed.request_id == "r1"
    assert parsed.instances == ((1.0, 2.0, 3.0, 4.0), (0.0, 0.0, 0.0, 1.0))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": []}, "empty input: 'instances' is an empty list"),
        ({"instances": {"f0": 1}}, "'instances' must be a list, got object"),
        ({"instances": [[1, 2, 3, 4]] * 4}, "too many instances"),
        ({"instances": [[1, 2, 3, 4], [1, 2, 3]]}, "instances[1]: wrong shape: expected 4 features, got 3"),
        ({"instances": [[1, 2, 3, 4]], "id": 7}, "'id' must be a string, got integer"),
    ],
)
def test_v1_problems(body: Any, expected: str) -> None:
    assert expected in bad(body)


# --- v2 ----------------------------------------------------------------------------------------------------


def test_v2_flat_nested_and_single_row() -> None:
    flat = parse_request(v2([1, 2, 3, 4, 5, 6, 7, 8], [2, 4], id="abc"), TABULAR)
    nested = parse_request(v2([[1, 2, 3, 4], [5, 6, 7, 8]], [2, 4]), TABULAR)
    single = parse_request(v2([1, 2, 3, 4], [4], "INT64"), TABULAR)
    assert flat.instances == nested.instances == ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0))
    assert flat.request_id == "abc"
    assert flat.v2_input == V2Input("x", "FP32", (2, 4))
    assert single.instances == ((1.0, 2.0, 3.0, 4.0),)
    assert parse_request(v2([True, False, True, True], [1, 4], "BOOL"), TABULAR).instances == ((1.0, 0.0, 1.0, 1.0),)


@pytest.mark.parametrize(
    ("data", "datatype"),
    [
        ([-128, 0, 1, 127], "INT8"),
        ([0, 1, 2, 255], "UINT8"),
        ([-(2**63), 0, 1, 2**63 - 1], "INT64"),  # beyond a float's exact integers: checked as integers
        ([0, 1, 2, 2**64 - 1], "UINT64"),
        ([-65504.0, 0.5, 1, 65504], "FP16"),
        ([-3.4e38, 1e-45, 0, 3.4e38], "FP32"),
    ],
)
def test_v2_values_at_their_datatypes_ends_are_taken(data: list[Any], datatype: str) -> None:
    parsed = parse_request(v2(data, [1, 4], datatype), TABULAR)
    assert parsed.instances == (tuple(float(value) for value in data),)


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        ([0, 1, 2, 2**63], "INT64", "inputs[0].data[3]: 9.22337e+18 is out of range"),
        ([0, 1, -1, 3], "UINT64", "inputs[0].data[2]: -1 is out of range"),
        ([0, 65505, 1, 2], "FP16", "inputs[0].data[1]: 65505 is out of range"),
        ([0, 1, 2, 10**400], "FP32", "inputs[0].data[3]: number out of range"),
        ([0, float("-inf"), 1, 2], "FP64", "inputs[0].data[1]: non-finite number -inf"),
        ([1.0, True, 2.0, 3.0], "FP32", "inputs[0].data[1]: wrong dtype: expected a number for FP32, got boolean"),
        ([1, 2, False, 3], "INT32", "inputs[0].data[2]: wrong dtype: expected a number for INT32, got boolean"),
        ([True, False, 1.0, True], "BOOL", "inputs[0].data[2]: wrong dtype: expected a boolean for BOOL"),
    ],
)
def test_v2_values_past_their_datatype_are_named(data: list[Any], datatype: str, expected: str) -> None:
    assert expected in bad(v2(data, [1, 4], datatype))


def test_v2_a_boolean_dimension_is_no_integer() -> None:
    assert "inputs[0].shape must be a list of integers" in bad(v2([1, 2, 3, 4], [True, 4]))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"inputs": []}, "'inputs' must hold exactly 1 input tensor, got 0"),
        ({"inputs": {}}, "'inputs' must be a list, got object"),
        ({"inputs": [1]}, "inputs[0] must be an object, got integer"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}, "missing field 'inputs[0].data'"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, "missing field 'inputs[0].datatype'"),
        (v2([1, 2, 3], [1, 3]), "inputs[0].shape [1, 3] is the wrong shape: expected [4] or [N, 4]"),
        (v2([1, 2, 3, 4], [2, 2]), "wrong shape"),
        (v2([1, 2, 3], [1, 4]), "inputs[0].data has 3 elements but inputs[0].shape [1, 4] needs 4"),
        (v2([[1, 2], [3, 4, 5, 6]], [2, 4]), "nested differently"),
        (v2([[[1], 2, 3, 4]], [1, 4]), "nested deeper"),
        (v2(["a", "b", "c", "d"], [1, 4], "BYTES"), "inputs[0].datatype BYTES is the wrong dtype"),
        (v2([1, 2, 3, 4], [1, 4], "FLOAT"), "inputs[0].datatype 'FLOAT' is not a v2 datatype"),
        (v2([1.5, 2, 3, 4], [1, 4], "INT32"), "inputs[0].data[0]: wrong dtype: expected an integer for INT32"),
        (v2([1, 2, 3, 400], [1, 4], "INT8"), "inputs[0].data[3]: 400 is out of range"),
        (v2([-1, 2, 3, 4], [1, 4], "UINT8"), "out of range"),
        (v2([1, 0, 1, 1], [1, 4], "BOOL"), "expected a boolean for BOOL"),
        (v2([1, "2", 3, 4], [1, 4]), "inputs[0].data[1]: wrong dtype: expected a number for FP32, got string"),
        (v2([1, 2, float("nan"), 4], [1, 4]), "inputs[0].data[2]: non-finite number nan"),
        (v2([], [0, 4]), "empty input: inputs[0].shape has 0 rows"),
        (v2([0] * 16, [4, 4]), "too many instances: 4 > 3"),
        (v2([1, 2, 3, 4], [1, -4]), "negative dimension"),
        (v2([1, 2, 3, 4], "1,4"), "inputs[0].shape must be a list of integers"),
        (v2(5, [1, 4]), "inputs[0].data must be a list, got integer"),
        ({**v2([1, 2, 3, 4], [1, 4]), "parameters": []}, "'parameters' must be an object"),
        ({**v2([1, 2, 3, 4], [1, 4]), "id": ["x"]}, "'id' must be a string"),
        ({"inputs": [{"name": 1, "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "inputs[0].name must be"),
    ],
)
def test_v2_problems(body: Any, expected: str) -> None:
    assert expected in bad(body)


# --- images ------------------------------------------------------------------------------------------------


def test_image_bodies_in_every_protocol() -> None:
    encoded = b64(PNG)
    assert parse_request(PNG, IMAGE) == ParsedRequest(Protocol.RAW, (PNG,), single=True)
    assert parse_request(bytearray(PNG), IMAGE).instances == (PNG,)
    assert parse_request(encoded, IMAGE).instances == (PNG,)  # text/plain base64
    assert parse_request({"data": f"data:image/png;base64,{encoded}"}, IMAGE).instances == (PNG,)
    assert parse_request([encoded, {"b64": encoded}], IMAGE).instances == (PNG, PNG)
    assert parse_request({"instances": [{"b64": encoded}]}, IMAGE).protocol is Protocol.V1
    assert parse_request(v2([encoded, encoded], [2], "BYTES"), IMAGE).instances == (PNG, PNG)
    assert parse_request(v2([[encoded]], [1, 1], "BYTES"), IMAGE).instances == (PNG,)
    assert parse_request({"b64": encoded}, IMAGE).instances == (PNG,)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [{"b64": "@@@"}]}, "instances[0].b64: not valid base64"),
        ({"instances": [{"b64": 5}]}, "instances[0].b64: expected a base64 string, got integer"),
        ({"instances": [{"image": "x"}]}, "instances[0]: expected {'b64': <base64 string>}"),
        ({"instances": [[1, 2]]}, "instances[0]: expected a base64 string or {'b64': ...}, got list"),
        ({"instances": [""]}, "instances[0]: empty image"),
        (v2([1.0], [1], "FP32"), "inputs[0].datatype FP32 is the wrong dtype: images come as BYTES"),
        (v2(["a", "b"], [1, 2], "BYTES"), "expected [N] or [N, 1]"),
        (v2([1], [1], "BYTES"), "inputs[0].data[0]: wrong dtype: expected a base64 string, got integer"),
        (v2(["x"] * 3, [3], "BYTES"), "too many instances: 3 > 2"),
        ([b64(PNG)] * 3, "too many instances"),
        (b'{"instances": ', "malformed JSON"),
    ],
)
def test_image_problems(body: Any, expected: str) -> None:
    assert expected in bad(body, IMAGE)


def test_json_content_type_with_broken_json_is_malformed_json_even_for_images() -> None:
    assert "malformed JSON" in bad(b"\x89PNG not json", IMAGE, content_type="application/json")


# --- TorchServe rows and envelopes -------------------------------------------------------------------------


def test_extract_body_from_torchserve_rows() -> None:
    assert extract_body({"body": b"x"}) == b"x"
    assert extract_body({"data": b"y"}) == b"y"
    assert extract_body({"file": b"z"}) == b"z"
    assert extract_body([1, 2]) == [1, 2]
    with pytest.raises(BadRequest, match="no body reached the model: the request has no Content-Type header"):
        extract_body({})
    form = "application/x-www-form-urlencoded"
    with pytest.raises(BadRequest, match=f"the Content-Type '{form}' is wrong for a model request"):
        extract_body({}, form)
    with pytest.raises(BadRequest, match="multipart request with 2 fields"):
        extract_body({"a": 1, "b": 2})


def test_envelope_readers() -> None:
    assert parse_envelope_v1([[1, 2, 3, 4]], TABULAR).instances == ((1.0, 2.0, 3.0, 4.0),)
    with pytest.raises(BadRequest, match="missing field 'instances'"):
        parse_envelope_v1(None, TABULAR)
    reshaped = [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]
    assert parse_envelope_v2(reshaped, TABULAR).instances == ((1.0, 2.0, 3.0, 4.0),)
    first_only = [{"name": "img", "shape": [1], "datatype": "BYTES", "data": b64(PNG)}]
    assert parse_envelope_v2(first_only, IMAGE).instances == (PNG,)
    with pytest.raises(BadRequest, match="missing field 'inputs'"):
        parse_envelope_v2(None, TABULAR)


# --- answers -----------------------------------------------------------------------------------------------

LABELS = ("a", "b")
CLASSES = [Prediction(label="b", probabilities=(0.25, 0.75)), Prediction(label="a", probabilities=(0.5, 0.5))]


def test_raw_and_v1_answers() -> None:
    single = ParsedRequest(Protocol.RAW, ((1.0,),), single=True)
    listed = ParsedRequest(Protocol.RAW, ((1.0,), (2.0,)))
    v1 = ParsedRequest(Protocol.V1, ((1.0,), (2.0,)))
    assert format_response(single, CLASSES[:1], LABELS, IDENTITY) == {
        "label": "b",
        "probabilities": {"a": 0.25, "b": 0.75},
    }
    assert format_response(listed, CLASSES, LABELS, IDENTITY)[1]["label"] == "a"
    assert format_response(v1, CLASSES, LABELS, IDENTITY) == {"predictions": [p.to_json(LABELS) for p in CLASSES]}
    with pytest.raises(ValueError, match="1 predictions for 2 instances"):
        format_response(v1, CLASSES[:1], LABELS, IDENTITY)


def test_v2_answers_for_each_prediction_kind() -> None:
    request = ParsedRequest(Protocol.V2, ((1.0,), (2.0,)), request_id=None, v2_input=V2Input("x", "FP32", (2, 1)))
    answer = format_response(request, CLASSES, LABELS, IDENTITY, fallback_id="ts-42")
    assert answer["model_name"] == "iris"
    assert answer["model_version"] == "2"
    assert answer["id"] == "ts-42"
    assert answer["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["b", "a"]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]},
    ]
    top = [Prediction(label="b", probabilities=(0.2, 0.8), top_k=(("b", 0.8), ("a", 0.2)))] * 2
    outputs = format_response(request, top, LABELS, IDENTITY)["outputs"]
    assert outputs[0] == {"name": "labels", "datatype": "BYTES", "shape": [2, 2], "data": ["b", "a", "b", "a"]}
    assert outputs[1]["data"] == [0.8, 0.2, 0.8, 0.2]
    values = [Prediction(value=1.5), Prediction(value=-2.0)]
    assert format_response(request, values, (), IDENTITY)["outputs"] == [
        {"name": "prediction", "datatype": "FP32", "shape": [2], "data": [1.5, -2.0]}
    ]
    multi = [Prediction(value=(1.0, 2.0)), Prediction(value=(3.0, 4.0))]
    assert format_response(request, multi, (), IDENTITY)["outputs"][0]["shape"] == [2, 2]
    assert envelope_v2_payload(CLASSES) == [[[0.25, 0.75], [0.5, 0.5]]]


def test_reason_phrase_is_one_printable_line() -> None:
    phrase = reason_phrase("bad\r\nthing\x00é" + "x" * 500)
    assert "\n" not in phrase
    assert "\r" not in phrase
    assert phrase.startswith("bad  thing")
    assert len(phrase) == 300


# --- properties --------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)
numbers = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=3), st.none())
tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(st.text(max_size=5), st.integers()),
        "shape": st.one_of(st.lists(st.integers(-2, 6), max_size=3), json_values),
        "datatype": st.sampled_from(["FP32", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "NOPE"]),
        "data": st.one_of(st.lists(numbers, max_size=20), st.lists(st.lists(numbers, max_size=5), max_size=5)),
    }
)
structured = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=2)}, optional={"id": json_values}),
    st.fixed_dictionaries({"instances": st.one_of(st.lists(st.lists(numbers, max_size=5), max_size=5), json_values)}),
    st.fixed_dictionaries({"data": json_values}),
    st.dictionaries(st.sampled_from(["f0", "f1", "f2", "f3", "x"]), numbers),
)
SPECS = [TABULAR, UNNAMED, IMAGE]


def _parses_or_bad_request(body: Any, **kwargs: Any) -> None:
    messages: list[str] = []
    for spec in SPECS:
        try:
            parsed = parse_request(body, spec, **kwargs)
        except BadRequest as error:
            messages.append(error.message)
            continue
        assert 1 <= len(parsed.instances) <= spec.max_instances
        for instance in parsed.instances:
            if spec.kind == "tabular":
                assert len(instance) == spec.n_features
                assert all(isinstance(x, float) and math.isfinite(x) for x in instance)
            else:
                assert isinstance(instance, bytes)
    assert all(messages)  # every refusal says why


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_give_bad_request(body: bytes) -> None:
    _parses_or_bad_request(body)
    _parses_or_bad_request(body, content_type="application/json")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, structured))
def test_any_json_value_parses_or_gives_bad_request(value: Any) -> None:
    _parses_or_bad_request(value)
    try:
        text = json.dumps(value)
    except ValueError:
        return
    _parses_or_bad_request(text.encode())


# --- requested outputs and binary tensor data --------------------------------------------------------------

NAMED = InputSpec("tabular", n_features=2, max_instances=3, output_names=("label", "probabilities"))


def _binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def test_binary_inputs_are_decoded_little_endian() -> None:
    header = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    body, length = _binary_body(header, struct.pack("<4f", 1.0, 2.5, -3.0, 4.0))
    parsed = parse_request(body, NAMED, binary_header=length)
    assert parsed.instances == ((1.0, 2.5), (-3.0, 4.0))
    image = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 4 + len(PNG)}}]
    }
    body, length = _binary_body(image, struct.pack("<I", len(PNG)) + PNG)
    assert parse_request(body, IMAGE, binary_header=length).instances == (PNG,)


@pytest.mark.parametrize(
    ("size", "blob", "header", "message"),
    [
        (16, b"\0" * 8, None, "runs past the end of the body (8 bytes of binary data left)"),
        (6, b"\0" * 6, None, "not a whole number of FP32 elements"),
        (8, b"\0" * 12, None, "4 bytes of binary data after the last input"),
        (8, b"\0" * 8, "abc", "Inference-Header-Content-Length 'abc' is not a non-negative integer"),
        (8, b"\0" * 8, "99999", "longer than the"),
        (8, b"\0" * 8, "\u00b2", "Inference-Header-Content-Length '\u00b2' is not a non-negative integer"),
        (8, b"\0" * 8, "0" * 4300 + "104", "is not a non-negative integer"),  # beyond what int reads
        (-1, b"", None, "binary_data_size must be a non-negative integer"),
    ],
)
def test_broken_binary_requests_say_what_is_wrong(size: int, blob: bytes, header: str | None, message: str) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    body, length = _binary_body(doc, blob)
    with pytest.raises(BadRequest, match=re.escape(message)):
        parse_request(body, NAMED, binary_header=header or length)


def test_a_binary_bool_byte_other_than_0_or_1_is_refused_naming_it() -> None:
    """A JSON BOOL of 2 is refused; the byte 2 was read as true."""
    doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]}
    body, length = _binary_body(doc, bytes([1, 0]))
    assert parse_request(body, NAMED, binary_header=length).instances == ((1.0, 0.0),)
    body, length = _binary_body(doc, bytes([1, 2]))
    with pytest.raises(BadRequest, match="BOOL element 1 is the byte 2; a BOOL byte is 0 or 1"):
        parse_request(body, NAMED, binary_header=length)


def test_requested_outputs_are_picked_checked_and_marked_binary() -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "label"}],
    }
    parsed = parse_request(doc, NAMED)
    assert parsed.outputs == ("probabilities", "label")
    assert parsed.binary_outputs == frozenset({"probabilities"})
    answer = format_response(parsed, [Prediction(label="a", probabilities=(0.25, 0.75))], ["a", "b"], IDENTITY)
    assert [output["name"] for output in answer["outputs"]] == ["probabilities", "label"]
    everything = parse_request({**doc, "outputs": None, "parameters": {"binary_data_output": True}}, NAMED)
    assert everything.outputs == () and everything.binary_outputs == frozenset({"label", "probabilities"})
    with pytest.raises(BadRequest, match=r"outputs\[0\]\.name 'nope' is not an output of this model"):
        parse_request({**doc, "outputs": [{"name": "nope"}]}, NAMED)
    with pytest.raises(BadRequest, match="asked for twice"):
        parse_request({**doc, "outputs": [{"name": "label"}, {"name": "label"}]}, NAMED)
    with pytest.raises(BadRequest, match=r"parameters\.binary_data_output must be a boolean"):
        parse_request({**doc, "parameters": {"binary_data_output": "yes"}}, NAMED)


def test_binary_answers_carry_sizes_and_little_endian_data() -> None:
    body = {
        "id": "1",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 1], "data": [0.5, 1.0]},
        ],
    }
    payload, length = encode_binary(body, frozenset({"label", "probabilities"}))
    header = json.loads(payload[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [4 + 1 + 4 + 2, 8]
    assert all("data" not in o for o in header["outputs"])
    assert payload[length:] == struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc" + struct.pack("<2f", 0.5, 1.0)
    mixed, mixed_length = encode_binary(body, frozenset({"label"}))
    assert json.loads(mixed[:mixed_length])["outputs"][1]["data"] == [0.5, 1.0]


# --- what a client sends never makes a long or failing error ------------------------------------------------

HUGE_KEY = "k" * 100_000
HUGE_INT = "9" * 5000


@pytest.mark.parametrize(
    "body",
    [
        {HUGE_KEY: 1},
        {"data": [1], HUGE_KEY: 2},
        {"instances": [{HUGE_KEY: 1.0}]},
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": HUGE_KEY, "data": [1, 2, 3, 4]}]},
        {"inputs": [{"name": "x", "shape": [-1] * 10_000, "datatype": "FP32", "data": []}]},
        {
            "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
            "outputs": [{"name": HUGE_KEY}] * 2,
        },
        {"instances": [{str(i): 1 for i in range(5000)}]},
    ],
)
def test_errors_echo_a_bounded_part_of_what_was_sent(body: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request(json.dumps(body).encode(), TABULAR, content_type="application/json")
    assert len(caught.value.message) <= 400, caught.value.message[:200]


@pytest.mark.parametrize(
    "text",
    [
        f'{{"instances": [[{HUGE_INT}, 1, 2, 3]]}}',
        f'{{"inputs": [{{"name": "x", "shape": [1, {HUGE_INT}], "datatype": "FP32", "data": [1]}}]}}',
    ],
)
def test_integers_too_long_to_read_are_bad_requests(text: str) -> None:
    with pytest.raises(BadRequest, match="too long to read"):
        parse_request(text.encode(), TABULAR, content_type="application/json")


def test_huge_integers_already_decoded_are_bad_requests() -> None:
    huge = 10**5000
    for body in (
        {"instances": [[huge, 1, 2, 3]]},
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [huge, 1, 2, 3]}]},
        {"inputs": [{"name": "x", "shape": [1, huge], "datatype": "FP32", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT32", "data": [0.5, 1, 2, 3]}], "id": 1},
    ):
        with pytest.raises(BadRequest) as caught:
            parse_request(body, TABULAR)
        assert len(caught.value.message) <= 400


def _form(*parts: tuple[str, bytes], boundary: str = "b0und", close: bool = True) -> bytes:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'.encode()
        + b"Content-Type: application/octet-stream\r\n\r\n"
        + payload
        + b"\r\n"
        for name, payload in parts
    )
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def test_a_multipart_form_is_read_by_its_data_field_and_bounded() -> None:
    """The field named data (not one whose filename merely contains "name"), a delimiter-like line inside it kept;
    more than a few fields, or a part without its closing boundary, refused without reading further."""
    kind = "multipart/form-data; boundary=b0und"
    image = PNG + b"\r\n--b0un not the boundary\r\n"
    parsed = parse_request(_form(("note", b"x"), ("data", image)), IMAGE, content_type=kind)
    assert parsed.instances == parse_request(image, IMAGE).instances
    many = _form(*[(f"f{i}", b"v") for i in range(20)])
    assert "more than 8 fields; send one field named 'data'" in bad(many, IMAGE, content_type=kind)
    unclosed = _form(("data", PNG), close=False)[:-2]
    assert "a part does not end with its boundary" in bad(unclosed, IMAGE, content_type=kind)
