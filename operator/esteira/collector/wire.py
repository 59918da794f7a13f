"""Bodies in, typed records out: CloudEvents (binary, structured or batched) and label and audit JSON.

Each item is checked on its own; a bad one is reported with its index and a precise reason and the good
ones in the same batch still go through.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from esteira.collector.model import AuditEntry, Label, Record
from esteira.quality.scores import Answer
from esteira.vocabulary import (
    CE_INFERENCE_REQUEST,
    CE_INFERENCE_RESPONSE,
    CE_INFERENCE_SERVICE,
    CE_MODEL_NAME,
    CE_MODEL_VERSION,
    CE_NAMESPACE,
    CE_PREDICTIONS,
    CE_REVISION,
)

KINDS = {CE_INFERENCE_REQUEST: "request", CE_INFERENCE_RESPONSE: "response"}
MAX_ID = 256


@dataclass(frozen=True)
class Problem:
    index: int
    error: str


def _text(item: Mapping[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    value = item.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key} is required")
        return default
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise ValueError(f"{key} must be a non-empty string of at most {MAX_ID} characters, got {value!r:.60}")
    return _storable(value, key)


def _storable(text: str, field: str) -> str:
    """Text as the databases take it: PostgreSQL refuses the NUL character and neither takes a lone surrogate
    (not UTF-8). Refused here, it fails its own item; in the database it failed its whole batch on every resend."""
    if "\x00" in text:
        raise ValueError(f"{field} must not contain the NUL character (\\u0000): the database cannot store it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} must not contain a lone surrogate (\\ud800 to \\udfff): it is not UTF-8") from None
    return text


def _finite(number: int | float, what: str) -> float:
    """A number as a float, refused when not finite: NaN or Infinity (Python's json reads and writes them) would
    make every error sum they enter NaN."""
    try:
        value = float(number)
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite numbers, got {number!r:.60}")
    return value


def _time(value: Any, now: float) -> float:
    if value is None:
        return now
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"time must be RFC 3339, got {value!r:.60}") from None


def predictions_from_body(body: Any) -> tuple[Answer, ...]:
    """Labels or values from a v1 or v2 answer, for records from KServe's own logger (no predictions attribute).

    An answer of another shape has none (TypeError or none found); one with a value that is not finite is
    refused (ValueError), as the predictions attribute is.
    """
    if isinstance(body, Mapping) and isinstance(body.get("predictions"), list):
        out: list[Answer] = []
        for p in body["predictions"]:
            if isinstance(p, Mapping) and isinstance(p.get("label"), str):
                out.append(_storable(p["label"], "data.predictions[].label"))
            elif isinstance(p, int | float) and not isinstance(p, bool):
                out.append(_finite(p, "data.predictions"))
            else:
                return ()
        return tuple(out)
    if isinstance(body, Mapping) and isinstance(body.get("outputs"), list):
        by_name = {o.get("name"): o for o in body["outputs"] if isinstance(o, Mapping)}
        for name in ("label", "prediction"):
            data = (by_name.get(name) or {}).get("data")
            if isinstance(data, list):
                where = f"data.outputs[{name}].data"
                return tuple(_storable(d, where) if isinstance(d, str) else _finite(d, where) for d in data)
    return ()


def _answers(raw: Any, what: str) -> tuple[Answer, ...]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[Answer] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"{what} must be labels (strings) or values (numbers), got {item!r:.60}")
        # A label becomes a Prometheus label value once joined: a lone surrogate there failed every scrape.
        out.append(_storable(item, what) if isinstance(item, str) else _finite(item, what))
    return tuple(out)


def record_from_event(attributes: Mapping[str, Any], data: bytes | str, now: float) -> Record:
    """One CloudEvent (its attributes with extensions, and its data) as a Record; ValueError says what is wrong."""
    kind = KINDS.get(str(attributes.get("type")))
    if kind is None:
        raise ValueError(
            f"type must be {CE_INFERENCE_REQUEST} or {CE_INFERENCE_RESPONSE}, got {attributes.get('type')!r:.80}"
        )
    body = _storable(data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data, "data")
    predictions: tuple[Answer, ...] = ()
    if kind == "response":
        raw = attributes.get(CE_PREDICTIONS)
        if raw is not None:
            try:
                listed = json.loads(raw) if isinstance(raw, str) else raw
            except (json.JSONDecodeError, RecursionError):
                raise ValueError(f"{CE_PREDICTIONS} must be a JSON list") from None
            # A multi-output regressor answers a row of values an instance, which no label is joined with: the
            # record is kept without predictions (refused, the handler would have dropped it for good).
            rows = isinstance(listed, list) and any(isinstance(item, list) for item in listed)
            predictions = () if rows else _answers(listed, CE_PREDICTIONS)
        else:
            try:
                answer = json.loads(body)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than any answer: no predictions
                answer = None
            try:
                predictions = predictions_from_body(answer)
            except TypeError:  # an answer of a shape no model server gives
                predictions = ()
    return Record(
        namespace=_text(attributes, CE_NAMESPACE, required=False, default="default"),
        deployment=_text(attributes, CE_INFERENCE_SERVICE),
        revision=_text(attributes, CE_REVISION, required=False, default="unknown"),
        request_id=_text(attributes, "id"),
        kind=kind,
        at=_time(attributes.get("time"), now),
        body=body,
        model=_text(attributes, CE_MODEL_NAME, required=False),
        version=_text(attributes, CE_MODEL_VERSION, required=False),
        predictions=predictions,
    )


def binary_event(headers: Mapping[str, str], data: bytes, now: float) -> Record:
    """HTTP binary mode: attributes in ce-* headers, the payload as the body."""
    attributes = {k.lower().removeprefix("ce-"): v for k, v in headers.items() if k.lower().startswith("ce-")}
    return record_from_event(attributes, data, now)


def structured_event(event: Any, now: float) -> Record:
    """Structured mode: one JSON object with the attributes and `data` (or `data_base64`)."""
    if not isinstance(event, Mapping):
        raise ValueError("an event must be a JSON object")
    if "data_base64" in event:
        data: bytes | str = base64.b64decode(str(event["data_base64"]))
    else:
        payload = event.get("data")
        data = payload if isinstance(payload, str) else json.dumps(payload)
    return record_from_event(event, data, now)


def label_from(item: Any, now: float) -> Label:
    """`{"deployment", "namespace"?, "requestId", "label" | "value"}`: label(s) for a classifier, value(s) for a regressor."""
    if not isinstance(item, Mapping):
        raise ValueError("a label must be a JSON object")
    has_label, has_value = "label" in item, "value" in item
    if has_label == has_value:
        raise ValueError("give exactly one of label (classifiers) or value (regression)")
    if has_label:
        raw = item["label"]
        if not (isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw))):
            raise ValueError(f"label must be a string or a non-empty list of strings, got {raw!r:.60}")
    else:
        raw = item["value"]
        numbers = raw if isinstance(raw, list) else [raw]
        if not numbers or any(isinstance(x, bool) or not isinstance(x, int | float) for x in numbers):
            raise ValueError(f"value must be a number or a non-empty list of numbers, got {raw!r:.60}")
    answers = _answers(raw, "label" if has_label else "value")
    return Label(
        namespace=_text(item, "namespace", required=False, default="default"),
        deployment=_text(item, "deployment"),
        request_id=_text(item, "requestId"),
        truth=answers if isinstance(raw, list) else answers[0],
        at=_time(item.get("time"), now),
    )


def audit_from(item: Any, now: float) -> AuditEntry:
    if not isinstance(item, Mapping):
        raise ValueError("an audit entry must be a JSON object")
    details = item.get("details", {})
    if not isinstance(details, Mapping):
        raise ValueError("details must be a JSON object")
    message = item.get("message", "")
    if not isinstance(message, str):
        raise ValueError("message must be a string")
    return AuditEntry(
        namespace=_text(item, "namespace", required=False, default="default"),
        deployment=_text(item, "deployment"),
        reason=_text(item, "reason"),
        message=_storable(message, "message"),
        at=_time(item.get("time"), now),
        warning=bool(item.get("warning", False)),
        actor=_text(item, "actor", required=False),
        details=dict(details),
        entry_id=_text(item, "id", required=False) or None,
    )


def items_of(document: Any, key: str) -> list[Any]:
    """One object, a list of them, or `{key: [...]}`."""
    if isinstance(document, list):
        return document
    if isinstance(document, Mapping) and isinstance(document.get(key), list):
        return list(document[key])
    return [document]
