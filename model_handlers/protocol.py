"""Request parsing and response formatting for Esteira's handlers, free of torch so it can be tested alone.

One call of :func:`parse_request` turns one request's body into a :class:`ParsedRequest` or raises
:class:`BadRequest` with a message that names the problem; it never raises anything else, whatever the body.
:func:`format_response` turns the per-instance :class:`Prediction` objects back into the caller's protocol.

Accepted bodies (``n`` = the model's feature count, ``max`` = ``max_instances``):

raw (``POST /predictions/<model>``)
    Tabular: a feature vector ``[x1, ..., xn]``, named features ``{"f1": x1, ...}`` (every configured name,
    nothing else), or a list of those; optionally wrapped as ``{"data": <any of these>}`` (the only key).
    Image: raw image bytes (any Content-Type but application/json; a multipart field works too), a base64
    string (optionally a ``data:image/...;base64,`` URL), ``{"b64": "..."}``, or a list of those, optionally
    wrapped as ``{"data": ...}``. A body starting with ``{``, ``[`` or ``"`` is read as JSON.
    Both: a JSON body may also come as text/plain. Answer: one result object for a single instance, a list
    of them for a list. Tabular classification results are ``{"label", "probabilities": {label: p}}``,
    image results ``{"label", "top_k": [{"label", "score"}, ...]}``, regression results a number (or a list).
KServe v1 (``POST /v1/models/<model>:predict``)
    ``{"instances": [<instance>, ...]}`` with the instances above; other top-level keys are ignored.
    Answer: ``{"predictions": [<result>, ...]}``.
Open Inference Protocol v2 (``POST /v2/models/<model>/infer``)
    ``{"id"?: str, "inputs": [{"name": str, "shape": [...], "datatype": str, "data": [...]}], "parameters"?: {}}``
    with exactly one input. Tabular: a numeric datatype (FP16/32/64, INT8-64, UINT8-64, BOOL), shape
    ``[N, n]`` or ``[n]``, data flat (row-major) or nested to match the shape. Image: datatype ``BYTES``,
    shape ``[N]`` or ``[N, 1]``, data a list of base64 strings. Answer:
    ``{"model_name", "model_version", "id", "outputs": [{"name", "shape", "datatype", "data"}, ...]}`` with
    outputs ``label`` (BYTES [N]) + ``probabilities`` (FP32 [N, classes]), or ``labels`` + ``scores``
    (BYTES/FP32 [N, k]) for images, or ``prediction`` (FP32 [N] or [N, k]) for regression; ``id`` echoes the
    request's or, without one, is TorchServe's request id. ``outputs: [{"name", "parameters"?}]`` picks and
    orders the outputs (an unknown name is a 400 naming it). Binary tensor data (the
    ``Inference-Header-Content-Length`` header): inputs may carry ``parameters.binary_data_size`` instead of
    ``data``, with little-endian elements after the JSON header (BYTES: a 4-byte length before each element,
    for images the encoded image itself); ``parameters.binary_data_output`` or an output's
    ``parameters.binary_data`` asks for outputs the same way (:func:`encode_binary`).
Every protocol: numbers must be finite and within float32 range, at most ``max_instances`` per request, at
most ``max_body_bytes`` per body. Errors answer ``{"error": "<what and where>"}`` with status 400.

What TorchServe hands the handler (``data[i]`` of a batch) without an envelope: a dict whose ``body`` key
holds the decoded JSON (Content-Type application/json, or the raw bytes when that JSON is malformed), a
``str`` (text/*), or ``bytes``/``bytearray`` (anything else); a multipart field arrives under its own name
(``data`` usually); an urlencoded form arrives as its fields, often none. The frontend's native OIP mode
(``TS_OPEN_INFERENCE_PROTOCOL=oip``) passes the v2 body the same way. Behind ``service_envelope=kserve``
the handler gets the ``instances`` list of the first request only (or None when it is missing); behind
``kservev2`` a list of the first request's input dicts with ``data`` reshaped (BYTES: only its first
element). :func:`parse_envelope_v1` and :func:`parse_envelope_v2` read those.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Kind = Literal["tabular", "image"]
Instance = tuple[float, ...] | bytes
RAW_WRAPPER_KEY = "data"
MAX_FORM_FIELDS = 8  # a model request is one field; a few more (a filename field, a token) are read past
_BOUNDARY = re.compile(r'boundary="?([^";\s]+)"?', re.IGNORECASE)
_PART_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
RESERVED_KEYS = frozenset({"data", "instances", "inputs"})
FLOAT32_MAX = 3.4028234663852886e38

NUMERIC_DATATYPES: dict[str, tuple[float, float] | None] = {
    "FP16": (-65504.0, 65504.0),
    "FP32": (-FLOAT32_MAX, FLOAT32_MAX),
    "FP64": (-FLOAT32_MAX, FLOAT32_MAX),  # the model computes in float32
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "BOOL": None,
}
V2_DATATYPES = frozenset(NUMERIC_DATATYPES) | {"BYTES"}
# The binary tensor data extension: little-endian elements; BYTES elements carry a 4-byte length prefix.
BINARY_FORMATS = {
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "BOOL": "?",
}
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_LENGTH_DIGITS = 12  # a JSON header longer than 999 GB is no header
MAX_DIMENSIONS = 8
MAX_DIMENSION = 2**31 - 1
_MAX_MESSAGE = 300
# An error names what a client sent, never echoes it whole: a 1 MB key must not make a 1 MB answer.
_MAX_ECHO = 60
_MAX_KEYS = 10
MAX_ERROR_LENGTH = 1000


class BadRequest(ValueError):
    """The caller's fault (HTTP 400); the message says what is wrong and where, bounded in length."""

    status = 400

    def __init__(self, message: str) -> None:
        if len(message) > MAX_ERROR_LENGTH:
            message = message[: MAX_ERROR_LENGTH - 3] + "..."
        super().__init__(message)
        self.message = message


class Protocol(StrEnum):
    RAW = "raw"
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class InputSpec:
    """What the model accepts; built from the model's config file."""

    kind: Kind
    n_features: int | None = None
    feature_names: tuple[str, ...] = ()
    max_instances: int = 64
    max_body_bytes: int | None = None
    output_names: tuple[str, ...] = ()  # the v2 outputs a request may ask for; empty: not checked

    def __post_init__(self) -> None:
        if self.kind == "tabular" and not self.n_features:
            raise ValueError("a tabular InputSpec needs n_features")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as v2 model metadata describes it; -1 marks a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class V2Input:
    """The name, datatype and shape of the single v2 input tensor, echoed in errors and outputs."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ParsedRequest:
    """One request, validated: the instances in order plus what the answer needs to look like."""

    protocol: Protocol
    instances: tuple[Instance, ...]
    request_id: str | None = None
    v2_input: V2Input | None = None
    single: bool = False  # raw protocol only: one bare instance was sent, so one result (not a list) comes back
    outputs: tuple[str, ...] = ()  # v2: the outputs asked for, in order; empty means all of them
    binary_outputs: frozenset[str] = frozenset()  # v2: outputs to answer as binary tensor data


@dataclass(frozen=True)
class Prediction:
    """One instance's result, whatever the protocol: a class distribution, a top-k list or a regression value."""

    label: str | None = None
    probabilities: tuple[float, ...] = ()
    top_k: tuple[tuple[str, float], ...] = ()
    value: float | tuple[float, ...] | None = None

    def to_json(self, labels: Sequence[str]) -> Any:
        if self.value is not None:
            return list(self.value) if isinstance(self.value, tuple) else self.value
        if self.top_k:
            return {"label": self.label, "top_k": [{"label": name, "score": score} for name, score in self.top_k]}
        return {"label": self.label, "probabilities": dict(zip(labels, self.probabilities, strict=True))}


@dataclass(frozen=True)
class Identity:
    """How the model names itself in v2 answers and in metric labels."""

    name: str
    version: str
    revision: str


@dataclass
class _Budget:
    """Counts instances across a request so ``max_instances`` is checked before work is done."""

    limit: int
    seen: int = field(default=0)


# --- bodies --------------------------------------------------------------------------------------------------


def extract_body(row: Any, content_type: str | None = None) -> Any:
    """The body of one TorchServe batch entry: ``body``, else a multipart ``data`` field, else the only field."""
    if not isinstance(row, Mapping):
        return row
    if "body" in row:
        return row["body"]
    if RAW_WRAPPER_KEY in row:
        return row[RAW_WRAPPER_KEY]
    if len(row) == 1:
        return next(iter(row.values()))
    if not row:
        raise BadRequest(f"no body reached the model: {_content_type_problem(content_type)}")
    raise BadRequest(f"multipart request with {len(row)} fields; send one field named 'data'")


def _content_type_problem(content_type: str | None) -> str:
    """Why a body vanished: TorchServe reads a form (curl -d's default) or a missing type as form fields."""
    advice = "send JSON with Content-Type: application/json, or raw bytes with Content-Type: application/octet-stream"
    if not content_type:
        return f"the request has no Content-Type header; {advice}"
    return f"the Content-Type {_short(content_type)} is wrong for a model request (it is read as a form); {advice}"


def _looks_like_json(text: bytes | str) -> bool:
    stripped = text.lstrip()[:1]
    return stripped in (b"{", b"[", b'"', "{", "[", '"')


def decode_json(raw: bytes | bytearray | str) -> Any:
    """JSON text to a value, or BadRequest naming the syntax error."""
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"malformed JSON: the body is not UTF-8 text (byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequest(f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as error:  # an integer literal longer than Python converts (4300 digits)
        raise BadRequest(f"malformed JSON: a number is too long to read ({error})") from None


class TooLarge(BadRequest):
    """A body over the model's ``max_body_bytes`` (HTTP 413), as every runtime answers it."""

    status = 413

    def __init__(self, size: int | str, limit: int) -> None:
        super().__init__(f"the request body of {size} bytes exceeded the limit of {limit} bytes")


def parse_request(
    body: Any,
    spec: InputSpec,
    *,
    content_type: str | None = None,
    body_size: int | None = None,
    binary_header: str | None = None,
) -> ParsedRequest:
    """Validate one request body (bytes, str or decoded JSON) against ``spec``; BadRequest on any problem.

    ``binary_header`` is the request's ``Inference-Header-Content-Length``: the body is then a JSON header of
    that many bytes followed by the inputs' binary tensor data.
    """
    try:
        return _parse_request(body, spec, content_type, body_size, binary_header)
    except RecursionError:
        raise BadRequest("request nested too deeply") from None


def _parse_request(
    body: Any, spec: InputSpec, content_type: str | None, body_size: int | None, binary_header: str | None
) -> ParsedRequest:
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if isinstance(body, bytes | str):
        body_size = len(body)
    if spec.max_body_bytes is not None and body_size is not None and body_size > spec.max_body_bytes:
        raise TooLarge(body_size, spec.max_body_bytes)
    if binary_header is not None:
        return parse_document(_binary_document(body, binary_header), spec)
    media = str(content_type).lower() if content_type else ""
    if isinstance(body, bytes) and media.startswith("multipart/form-data") and body.startswith(b"--"):
        body, content_type = _form_field(body, str(content_type))
        media = content_type.lower() if content_type else ""
    if isinstance(body, str) and content_type == "application/json":
        return parse_document(body, spec)  # decoded by TorchServe, whose worker leaves undecodable JSON bytes
    if isinstance(body, bytes) and media.startswith("text"):
        body = _text(body)
    json_declared = "json" in media
    if isinstance(body, bytes | str):
        if not body.strip():
            raise BadRequest("empty request body")
        if spec.kind == "image" and not json_declared and not _looks_like_json(body):
            data = body if isinstance(body, bytes) else _b64(body, "body")
            return ParsedRequest(Protocol.RAW, (data,), single=True)
        body = decode_json(body)
    return parse_document(body, spec)


def _form_field(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The one field of a multipart form that carries the request (``data``, ``body`` or the only one) and its
    Content-Type. TorchServe's frontend splits a form into its fields before a handler sees it; a server that
    hands over the HTTP body (esteira-kserve, requests joined at the front) comes here, so a ``curl -F
    data=@cat.png`` reads alike in every runtime. Split with ``bytes.find``, at most ``MAX_FORM_FIELDS`` parts: a
    line-by-line parser took seconds of the serving thread over a body of newlines or of thousands of fields."""
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BadRequest("malformed multipart body: the Content-Type names no boundary")
    delimiter = b"--" + found.group(1).encode("latin-1", "replace")
    if not body.startswith(delimiter):
        raise BadRequest("malformed multipart body: it does not begin with its boundary")
    fields: dict[str, tuple[bytes, str | None]] = {}
    at = len(delimiter)
    while not body.startswith(b"--", at):  # "--" after a delimiter closes the form
        if len(fields) == MAX_FORM_FIELDS:
            raise BadRequest(f"multipart request with more than {MAX_FORM_FIELDS} fields; send one field named 'data'")
        line = body.find(b"\r\n", at)
        head_end = body.find(b"\r\n\r\n", line)
        end = body.find(b"\r\n" + delimiter, head_end + 4) if line >= 0 and head_end >= 0 else -1
        if end < 0:
            raise BadRequest("malformed multipart body: a part does not end with its boundary")
        name, media = _part_headers(body[line + 2 : head_end])
        fields[name] = (body[head_end + 4 : end], media)
        at = end + 2 + len(delimiter)
    chosen = extract_body(fields, content_type)
    assert isinstance(chosen, tuple)
    return chosen


def _part_headers(block: bytes) -> tuple[str, str | None]:
    """A form part's field name and Content-Type, from its header lines."""
    name, media = "", None
    for line in block.split(b"\r\n"):
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-disposition":
            quoted = _PART_NAME.search(value)
            name = quoted.group(1).decode("utf-8", "replace") if quoted else name
        elif key == b"content-type":
            media = value.strip().decode("latin-1")
    return name, media


def _text(body: bytes) -> str:
    """A text/* body as TorchServe's worker hands it over, decoded."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is declared text but is not UTF-8 (byte {error.start})") from None


def parse_document(doc: Any, spec: InputSpec) -> ParsedRequest:
    """Route a decoded JSON value to the raw, v1 or v2 reader."""
    if isinstance(doc, Mapping):
        if "inputs" in doc:
            return _parse_v2(doc, spec)
        if "instances" in doc:
            return _parse_v1(doc, spec)
        if RAW_WRAPPER_KEY in doc:
            if len(doc) != 1:
                extra = _keys(key for key in doc if key != RAW_WRAPPER_KEY)
                raise BadRequest(f"unexpected field(s) {extra} next to 'data'")
            return _parse_raw(doc[RAW_WRAPPER_KEY], spec, "data")
        named = spec.kind == "tabular" and any(key in spec.feature_names for key in doc)
        if not named and set(doc) != {"b64"}:
            raise BadRequest(f"missing field 'instances' (KServe v1), 'inputs' (v2) or 'data'; got keys {_keys(doc)}")
    if doc is None:
        raise BadRequest("empty input: the body is JSON null")
    return _parse_raw(doc, spec, "body")


def _parse_raw(payload: Any, spec: InputSpec, where: str) -> ParsedRequest:
    budget = _Budget(spec.max_instances)
    if isinstance(payload, list):
        if not payload:
            raise BadRequest(f"empty input: {where} is an empty list")
        if spec.kind == "tabular" and not isinstance(payload[0], list | Mapping):
            return ParsedRequest(Protocol.RAW, (_tabular_instance(payload, spec, where, budget),), single=True)
        instances = tuple(_instance(item, spec, f"{where}[{index}]", budget) for index, item in enumerate(payload))
        return ParsedRequest(Protocol.RAW, instances)
    return ParsedRequest(Protocol.RAW, (_instance(payload, spec, where, budget),), single=True)


def _parse_v1(doc: Mapping[str, Any], spec: InputSpec) -> ParsedRequest:
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f"'instances' must be a list, got {_kind(instances)}")
    if not instances:
        raise BadRequest("empty input: 'instances' is an empty list")
    budget = _Budget(spec.max_instances)
    parsed = tuple(_instance(item, spec, f"instances[{index}]", budget) for index, item in enumerate(instances))
    return ParsedRequest(Protocol.V1, parsed, request_id=_request_id(doc))


def _request_id(doc: Mapping[str, Any]) -> str | None:
    request_id = doc.get("id")
    if request_id is None:
        return None
    if not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {_kind(request_id)}")
    return request_id


# --- instances -----------------------------------------------------------------------------------------------


def _instance(item: Any, spec: InputSpec, where: str, budget: _Budget) -> Instance:
    if spec.kind == "tabular":
        return _tabular_instance(item, spec, where, budget)
    return _image_instance(item, where, budget)


def _count(budget: _Budget) -> None:
    budget.seen += 1
    if budget.seen > budget.limit:
        raise BadRequest(f"too many instances: more than {budget.limit} (max_instances) in one request")


def _tabular_instance(item: Any, spec: InputSpec, where: str, budget: _Budget) -> tuple[float, ...]:
    _count(budget)
    n = spec.n_features or 0
    if isinstance(item, Mapping):
        return _named_features(item, spec, where)
    if not isinstance(item, list):
        raise BadRequest(f"{where}: expected a list of {n} numbers or named features, got {_kind(item)}")
    if len(item) != n:
        raise BadRequest(f"{where}: wrong shape: expected {n} features, got {len(item)}")
    return _numbers(item, where)


def _numbers(values: list[Any], where: str) -> tuple[float, ...]:
    """A list of numbers as floats; the checks of :func:`_number` run element by element (naming the element)
    only when the whole list fails the quick test: every element an int or float, finite, within float32."""
    if all(type(value) is float or type(value) is int for value in values):
        try:
            numbers = tuple(map(float, values))
        except OverflowError:  # an integer beyond any float: the careful path names it
            numbers = ()
        if len(numbers) == len(values) and all(-FLOAT32_MAX <= number <= FLOAT32_MAX for number in numbers):
            return numbers  # NaN fails the comparison, so it takes the careful path too
    return tuple(_number(value, f"{where}[{index}]") for index, value in enumerate(values))


def _named_features(item: Mapping[str, Any], spec: InputSpec, where: str) -> tuple[float, ...]:
    if not spec.feature_names:
        raise BadRequest(f"{where}: this model has no feature names; send a list of {spec.n_features} numbers")
    missing = [name for name in spec.feature_names if name not in item]
    unknown = [key for key in item if key not in spec.feature_names]
    if missing or unknown:
        parts = [
            f"missing feature(s) {missing}" if missing else "",
            f"unknown feature(s) {_keys(unknown)}" if unknown else "",
        ]
        raise BadRequest(f"{where}: " + "; ".join(part for part in parts if part))
    return tuple(_number(item[name], f"{where}.{name}") for name in spec.feature_names)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where}: wrong dtype: expected a number, got {_kind(value)}")
    return _finite(value, where, (-FLOAT32_MAX, FLOAT32_MAX))


def _finite(value: float, where: str, bounds: tuple[float, float] | None) -> float:
    try:
        number = float(value)
    except OverflowError:
        raise BadRequest(f"{where}: number out of range") from None
    if not math.isfinite(number):
        raise BadRequest(f"{where}: non-finite number {number} is not allowed")
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise BadRequest(f"{where}: {number:g} is out of range")
    return number


_DATA_URL = re.compile(r"^data:[\w.+/-]*;base64,", re.IGNORECASE)


def _b64(text: str, where: str) -> bytes:
    stripped = _DATA_URL.sub("", text.strip(), count=1)
    if not stripped:
        raise BadRequest(f"{where}: empty image")
    try:
        return base64.b64decode(stripped, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None


def _image_instance(item: Any, where: str, budget: _Budget) -> bytes:
    _count(budget)
    if isinstance(item, str):
        return _b64(item, where)
    if isinstance(item, bytes | bytearray):
        if not item:
            raise BadRequest(f"{where}: empty image")
        return bytes(item)
    if isinstance(item, Mapping):
        if set(item) != {"b64"}:
            raise BadRequest(f"{where}: expected {{'b64': <base64 string>}}, got keys {_keys(item)}")
        if not isinstance(item["b64"], str):
            raise BadRequest(f"{where}.b64: expected a base64 string, got {_kind(item['b64'])}")
        return _b64(item["b64"], f"{where}.b64")
    raise BadRequest(f"{where}: expected a base64 string or {{'b64': ...}}, got {_kind(item)}")


# --- binary tensor data -------------------------------------------------------------------------------------


def _binary_document(body: Any, header: str) -> Any:
    """The v2 document of a binary request, each binary input's ``data`` decoded from the bytes after the JSON."""
    if not isinstance(body, bytes):
        raise BadRequest(
            f"{BINARY_HEADER} is set but the body did not arrive as bytes; send it as application/octet-stream"
        )
    text = header.strip()
    # ASCII digits, no more than a body could hold: str.isdigit takes a Latin-1 superscript, and int refuses
    # thousands of digits, each a server error rather than the caller's.
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_LENGTH_DIGITS):
        raise BadRequest(f"{BINARY_HEADER} {_short(header)} is not a non-negative integer")
    length = int(text)
    if length > len(body):
        raise BadRequest(f"{BINARY_HEADER} {length} is longer than the {len(body)}-byte body")
    doc = decode_json(body[:length])
    blob, offset = body[length:], 0
    tensors = doc.get("inputs") if isinstance(doc, Mapping) else None
    if not isinstance(tensors, list):
        raise BadRequest("a binary request needs a JSON header with an 'inputs' list")
    rebuilt: list[Any] = []
    for index, tensor in enumerate(tensors):
        size = _binary_size(tensor, f"inputs[{index}]")
        if size is None:
            rebuilt.append(tensor)
            continue
        if "data" in tensor:
            raise BadRequest(f"inputs[{index}] has both 'data' and parameters.binary_data_size")
        if offset + size > len(blob):
            raise BadRequest(
                f"inputs[{index}].parameters.binary_data_size {size} runs past the end of the body "
                f"({len(blob) - offset} bytes of binary data left)"
            )
        data = _unpack(blob[offset : offset + size], tensor.get("datatype"), f"inputs[{index}]")
        rebuilt.append({**tensor, "data": data})
        offset += size
    if offset != len(blob):
        raise BadRequest(f"{len(blob) - offset} bytes of binary data after the last input's binary_data_size")
    return {**doc, "inputs": rebuilt}


def _binary_size(tensor: Any, where: str) -> int | None:
    parameters = tensor.get("parameters") if isinstance(tensor, Mapping) else None
    if not isinstance(parameters, Mapping) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"{where}.parameters.binary_data_size must be a non-negative integer, got {_short(size)}")
    return size


def _unpack(raw: bytes, datatype: Any, where: str) -> list[Any]:
    if datatype == "BYTES":
        items: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise BadRequest(f"{where}: BYTES element {len(items)} has a truncated 4-byte length prefix")
            (size,) = struct.unpack_from("<I", raw, offset)
            if offset + 4 + size > len(raw):
                raise BadRequest(f"{where}: BYTES element {len(items)} is longer than its binary data")
            items.append(raw[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return items
    code = BINARY_FORMATS.get(str(datatype))
    if code is None:
        raise BadRequest(f"{where}.datatype {_short(datatype)} is not a v2 datatype; one of {sorted(V2_DATATYPES)}")
    width = struct.calcsize(code)
    if len(raw) % width:
        raise BadRequest(f"{where}: {len(raw)} bytes of binary data is not a whole number of {datatype} elements")
    if datatype == "BOOL":  # one byte each, 0 or 1, as a JSON BOOL is false or true: 2 is no boolean
        bad = next((index for index, byte in enumerate(raw) if byte > 1), None)
        if bad is not None:
            raise BadRequest(f"{where}: BOOL element {bad} is the byte {raw[bad]}; a BOOL byte is 0 or 1")
    return [value for (value,) in struct.iter_unpack("<" + code, raw)]


def encode_binary(body: Mapping[str, Any], names: frozenset[str]) -> tuple[bytes, int]:
    """A v2 answer with the outputs in ``names`` moved to binary tensor data: (whole body, JSON header length)."""
    outputs, blobs = [], []
    for output in body["outputs"]:
        if output["name"] not in names:
            outputs.append(output)
            continue
        blob = _pack(output["data"], output["datatype"])
        parameters = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        outputs.append({key: value for key, value in output.items() if key != "data"} | {"parameters": parameters})
        blobs.append(blob)
    header = json.dumps({**body, "outputs": outputs}, allow_nan=False).encode()
    return header + b"".join(blobs), len(header)


def _pack(data: Sequence[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [item if isinstance(item, bytes) else str(item).encode() for item in data]
        return b"".join(struct.pack("<I", len(item)) + item for item in encoded)
    return struct.pack(f"<{len(data)}{BINARY_FORMATS[datatype]}", *data)


# --- v2 ------------------------------------------------------------------------------------------------------


def _parse_v2(doc: Mapping[str, Any], spec: InputSpec) -> ParsedRequest:
    request_id = _request_id(doc)
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise BadRequest(f"'parameters' must be an object, got {_kind(parameters)}")
    inputs = doc["inputs"]
    if not isinstance(inputs, list):
        raise BadRequest(f"'inputs' must be a list, got {_kind(inputs)}")
    if len(inputs) != 1:
        raise BadRequest(f"'inputs' must hold exactly 1 input tensor, got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, Mapping):
        raise BadRequest(f"inputs[0] must be an object, got {_kind(tensor)}")
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise BadRequest(f"missing field 'inputs[0].{key}'")
    name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
    if not isinstance(name, str):
        raise BadRequest(f"inputs[0].name must be a string, got {_kind(name)}")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise BadRequest(f"inputs[0].datatype {_short(datatype)} is not a v2 datatype; one of {sorted(V2_DATATYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):  # JSON's integers; no booleans
        raise BadRequest(f"inputs[0].shape must be a list of integers, got {_short(shape)}")
    if shape and min(shape) < 0:
        raise BadRequest(f"inputs[0].shape {_short(shape)} has a negative dimension")
    if len(shape) > MAX_DIMENSIONS or (shape and max(shape) > MAX_DIMENSION):
        raise BadRequest(
            f"inputs[0].shape {_short(shape)} is too large: at most {MAX_DIMENSIONS} dimensions of at most {MAX_DIMENSION}"
        )
    data = tensor["data"]
    if not isinstance(data, list):
        raise BadRequest(f"inputs[0].data must be a list, got {_kind(data)}")
    info = V2Input(name, datatype, tuple(shape))
    if spec.kind == "tabular":
        instances: tuple[Instance, ...] = _v2_tabular(info, data, spec)
    else:
        instances = _v2_images(info, data, spec)
    outputs, binary = _requested_outputs(
        doc.get("outputs"), spec, _flag(parameters, "binary_data_output", "parameters")
    )
    return ParsedRequest(
        Protocol.V2, instances, request_id=request_id, v2_input=info, outputs=outputs, binary_outputs=binary
    )


def _flag(parameters: Any, key: str, where: str) -> bool:
    value = parameters.get(key, False) if isinstance(parameters, Mapping) else False
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.{key} must be a boolean, got {_kind(value)}")
    return value


def _requested_outputs(requested: Any, spec: InputSpec, all_binary: bool) -> tuple[tuple[str, ...], frozenset[str]]:
    """The names asked for in ``outputs`` (checked against the model's) and which of them come back binary."""
    if requested is None:
        return (), frozenset(spec.output_names) if all_binary else frozenset()
    if not isinstance(requested, list):
        raise BadRequest(f"'outputs' must be a list, got {_kind(requested)}")
    names: list[str] = []
    binary: set[str] = set()
    for index, output in enumerate(requested):
        where = f"outputs[{index}]"
        if not isinstance(output, Mapping) or not isinstance(output.get("name"), str):
            raise BadRequest(f"{where} must be an object with a string 'name'")
        name = output["name"]
        if spec.output_names and name not in spec.output_names:
            raise BadRequest(
                f"{where}.name {_short(name)} is not an output of this model; its outputs are {list(spec.output_names)}"
            )
        if name in names:
            raise BadRequest(f"{where}.name {_short(name)} is asked for twice")
        parameters = output.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise BadRequest(f"{where}.parameters must be an object, got {_kind(parameters)}")
        if isinstance(parameters, Mapping) and parameters.get("classification"):
            raise BadRequest(f"{where}.parameters.classification is not supported; ask for the output itself")
        if isinstance(parameters, Mapping) and "binary_data" in parameters:
            if _flag(parameters, "binary_data", f"{where}.parameters"):
                binary.add(name)
        elif all_binary:
            binary.add(name)
        names.append(name)
    return tuple(names), frozenset(binary)


def _check_rows(rows: int, spec: InputSpec) -> int:
    if rows == 0:
        raise BadRequest("empty input: inputs[0].shape has 0 rows")
    if rows > spec.max_instances:
        raise BadRequest(f"too many instances: {rows} > {spec.max_instances} (max_instances) in one request")
    return rows


def _v2_tabular(info: V2Input, data: list[Any], spec: InputSpec) -> tuple[tuple[float, ...], ...]:
    n = spec.n_features or 0
    if info.datatype not in NUMERIC_DATATYPES:
        raise BadRequest(f"inputs[0].datatype {info.datatype} is the wrong dtype: expected a numeric type (FP32, ...)")
    if info.shape == (n,):
        rows = 1
    elif len(info.shape) == 2 and info.shape[1] == n:
        rows = _check_rows(info.shape[0], spec)
    else:
        raise BadRequest(f"inputs[0].shape {list(info.shape)} is the wrong shape: expected [{n}] or [N, {n}]")
    values = _typed_values(_flatten(data, info.shape), info.datatype)
    return tuple(tuple(values[row * n : (row + 1) * n]) for row in range(rows))


def _v2_images(info: V2Input, data: list[Any], spec: InputSpec) -> tuple[bytes, ...]:
    if info.datatype != "BYTES":
        raise BadRequest(f"inputs[0].datatype {info.datatype} is the wrong dtype: images come as BYTES")
    if len(info.shape) == 1 or (len(info.shape) == 2 and info.shape[1] == 1):
        _check_rows(info.shape[0], spec)
    else:
        raise BadRequest(f"inputs[0].shape {list(info.shape)} is the wrong shape: expected [N] or [N, 1]")
    images = []
    for index, item in enumerate(_flatten(data, info.shape)):
        if isinstance(item, bytes) and item:  # binary tensor data: the encoded image itself
            images.append(item)
            continue
        if not isinstance(item, str):
            raise BadRequest(f"inputs[0].data[{index}]: wrong dtype: expected a base64 string, got {_kind(item)}")
        images.append(_b64(item, f"inputs[0].data[{index}]"))
    return tuple(images)


def _flatten(data: list[Any], shape: tuple[int, ...]) -> list[Any]:
    """Row-major flat data, from flat or nested JSON; BadRequest when the elements do not fit ``shape``."""
    expected = math.prod(shape)
    level = data
    if any(isinstance(item, list) for item in data):
        for depth in range(len(shape) - 1):
            size = shape[depth + 1]
            if len(level) != math.prod(shape[: depth + 1]) or not all(
                isinstance(item, list) and len(item) == size for item in level
            ):
                raise BadRequest(f"inputs[0].data is nested differently from inputs[0].shape {list(shape)}")
            level = [inner for item in level for inner in item]
        if any(isinstance(item, list) for item in level):
            raise BadRequest(f"inputs[0].data is nested deeper than inputs[0].shape {list(shape)}")
    if len(level) != expected:
        raise BadRequest(f"inputs[0].data has {len(level)} elements but inputs[0].shape {list(shape)} needs {expected}")
    return level


def _typed_values(values: list[Any], datatype: str) -> list[float]:
    """The elements as floats; the checks of :func:`_typed` run element by element (naming the element) only when
    the whole list fails the quick test: every element of the datatype's Python type and within its range."""
    low, high = NUMERIC_DATATYPES[datatype] or (-math.inf, math.inf)
    if datatype == "BOOL":
        if all(type(value) is bool for value in values):
            return list(map(float, values))
    elif datatype.startswith("FP"):
        if all(type(value) is float or type(value) is int for value in values):
            try:
                numbers = list(map(float, values))
            except OverflowError:  # an integer beyond any float: the careful path names it
                numbers = []
            if len(numbers) == len(values) and all(low <= number <= high for number in numbers):
                return numbers  # NaN fails the comparison, so it takes the careful path too
    elif all(type(value) is int and low <= value <= high for value in values):
        return list(map(float, values))
    return [_typed(value, datatype, f"inputs[0].data[{index}]") for index, value in enumerate(values)]


def _typed(value: Any, datatype: str, where: str) -> float:
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise BadRequest(f"{where}: wrong dtype: expected a boolean for BOOL, got {_kind(value)}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{where}: wrong dtype: expected a number for {datatype}, got {_kind(value)}")
    if not datatype.startswith("FP") and not isinstance(value, int):
        raise BadRequest(f"{where}: wrong dtype: expected an integer for {datatype}, got {_short(value)}")
    return _finite(value, where, NUMERIC_DATATYPES[datatype])


# --- envelopes -----------------------------------------------------------------------------------------------


def parse_envelope_v1(instances: Any, spec: InputSpec) -> ParsedRequest:
    """What the ``kserve`` envelope hands over: the first request's ``instances`` (None when it had none)."""
    if instances is None:
        raise BadRequest("missing field 'instances'")
    return parse_request({"instances": instances}, spec)


def parse_envelope_v2(inputs: Any, spec: InputSpec) -> ParsedRequest:
    """What the ``kservev2`` envelope hands over: input dicts with ``data`` reshaped (BYTES: first element)."""
    if not isinstance(inputs, list):
        raise BadRequest("missing field 'inputs'")
    rebuilt = []
    for tensor in inputs:
        if (
            isinstance(tensor, Mapping)
            and tensor.get("datatype") == "BYTES"
            and not isinstance(tensor.get("data"), list)
        ):
            tensor = {**tensor, "data": [tensor.get("data")], "shape": [1]}
        rebuilt.append(tensor)
    return parse_request({"inputs": rebuilt}, spec)


# --- answers -------------------------------------------------------------------------------------------------


def format_response(
    request: ParsedRequest,
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    identity: Identity,
    fallback_id: str | None = None,
) -> Any:
    """The JSON value answering ``request`` with one prediction per instance, in the caller's protocol."""
    if len(predictions) != len(request.instances):
        raise ValueError(f"{len(predictions)} predictions for {len(request.instances)} instances")
    if request.protocol is Protocol.V2:
        outputs = v2_outputs(predictions, labels)
        if request.outputs:
            by_name = {output["name"]: output for output in outputs}
            outputs = [by_name[name] for name in request.outputs if name in by_name]
        return {
            "model_name": identity.name,
            "model_version": identity.version,
            "id": request.request_id or fallback_id or "",
            "outputs": outputs,
        }
    results = [prediction.to_json(labels) for prediction in predictions]
    if request.protocol is Protocol.V1:
        return {"predictions": results}
    return results[0] if request.single else results


def v2_outputs(predictions: Sequence[Prediction], labels: Sequence[str]) -> list[dict[str, Any]]:
    """OIP output tensors: ``prediction``; or ``labels`` + ``scores`` (top-k); or ``label`` + ``probabilities``."""
    n = len(predictions)
    first = predictions[0]
    if first.value is not None:
        values = [p.value if isinstance(p.value, tuple) else (float(p.value or 0.0),) for p in predictions]
        width = len(values[0])
        shape = [n] if not isinstance(first.value, tuple) else [n, width]
        return [_tensor("prediction", "FP32", shape, [float(v) for row in values for v in row])]
    if first.top_k:
        k = len(first.top_k)
        return [
            _tensor("labels", "BYTES", [n, k], [name for p in predictions for name, _ in p.top_k]),
            _tensor("scores", "FP32", [n, k], [score for p in predictions for _, score in p.top_k]),
        ]
    return [
        _tensor("label", "BYTES", [n], [p.label for p in predictions]),
        _tensor("probabilities", "FP32", [n, len(labels)], [v for p in predictions for v in p.probabilities]),
    ]


def envelope_v2_payload(predictions: Sequence[Prediction]) -> list[Any]:
    """What to hand the ``kservev2`` envelope: one tensor for the one input (probabilities or values)."""
    rows = [p.value if p.value is not None else list(p.probabilities) for p in predictions]
    return [[list(row) if isinstance(row, tuple) else row for row in rows]]


def _tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def error_body(message: str) -> dict[str, str]:
    """The JSON error every protocol uses (it is also the OIP error shape)."""
    return {"error": message}


def reason_phrase(message: str) -> str:
    """An HTTP reason phrase: one line of printable ASCII, bounded."""
    cleaned = "".join(ch if " " <= ch <= "~" else " " for ch in message)
    return cleaned[:_MAX_MESSAGE]


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", type(None): "null"}
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    return names.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    """A bounded repr of something a client sent (an integer too long to print is described, not printed)."""
    try:
        text = repr(value)
    except ValueError:  # Python refuses to print integers of more than 4300 digits
        text = "<holding an integer too long to print>"
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


def _keys(keys: Any) -> str:
    """Object keys a client sent, each shortened, at most ``_MAX_KEYS`` of them."""
    names = sorted(str(key) for key in keys)
    shown = [_short(name) for name in names[:_MAX_KEYS]]
    more = f" and {len(names) - _MAX_KEYS} more" if len(names) > _MAX_KEYS else ""
    return f"[{', '.join(shown)}]{more}"
