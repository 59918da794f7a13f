"""Several callers' requests in one request to TorchServe, and their answers in one answer: the framing the pod's
front and ``esteira up``'s router write (:mod:`esteira.packaging.joiner`) and Esteira's handler reads (esteira-kserve
on its Unix socket, :mod:`model_handlers.inference_asgi`).

Why: TorchServe spends about 850 us of its CPU on every HTTP request whatever it carries (its frontend, job
queue, the socket protocol to its worker and the worker's loop), and its own batching still takes in, queues,
hands over and answers each request alone (``benchmarks/README.md``, "What TorchServe spends a request"). Requests
joined before TorchServe cost it that once for the lot; the handler then answers each of them on its own, as it
answers each request of a TorchServe batch (its status, headers, request id, metrics and inference record).

A joined body is its entries one after another, each a JSON object (a request's headers; an answer's status and
headers) and then the entry's body, both preceded by their length in bytes (4 bytes, big-endian). The request
says how many entries it carries in ``JOINED_HEADER``, and its answer says the same when it is joined: an answer
without it (TorchServe's own refusal, a handler that does not read joined requests) is the answer to every
request joined in it. Kept free of torch and TorchServe: the operator's image imports it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

JOINED_HEADER = "x-esteira-joined"  # on a joined request and its joined answer: how many requests or answers
JOINED_CONTENT_TYPE = "application/octet-stream"  # so that TorchServe's worker passes the body as bytes
_LENGTH = struct.Struct("!I")
MAX_COUNT_DIGITS = 6  # a joined count past a million is no count a front or router makes


UNREADABLE = "a joined request that cannot be read"  # a server's error for one, before why


class FramingError(ValueError):
    """A joined body that does not hold what it says."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One request (``meta`` its headers, lower-case names) or one answer (``meta`` its ``status`` and
    ``headers``) of a joined body."""

    meta: Mapping[str, Any]
    body: bytes


def framed(entry: Entry) -> bytes:
    """One entry as it stands in a joined body."""
    meta = json.dumps(entry.meta, separators=(",", ":")).encode()
    return b"".join((_LENGTH.pack(len(meta)), meta, _LENGTH.pack(len(entry.body)), entry.body))


def frame(entries: Iterable[Entry]) -> bytes:
    """The entries as one body."""
    return b"".join(map(framed, entries))


def unframe(data: bytes | bytearray, count: int) -> list[Entry]:
    """The ``count`` entries of a joined body; FramingError where it holds anything else."""
    view, at, entries = memoryview(data), 0, []
    for index in range(count):
        meta_bytes, at = _piece(view, at, index, "header")
        body, at = _piece(view, at, index, "body")
        try:
            meta = json.loads(meta_bytes)
        except ValueError as exc:
            raise FramingError(f"entry {index}: its header is not JSON ({exc})") from None
        except RecursionError:
            raise FramingError(f"entry {index}: its header is nested too deeply") from None
        if not isinstance(meta, dict):
            raise FramingError(f"entry {index}: its header is not a JSON object")
        entries.append(Entry(meta, body))
    if at != len(view):
        raise FramingError(f"{len(view) - at} bytes follow the {count} entries the request says it joins")
    return entries


def _piece(view: memoryview, at: int, index: int, what: str) -> tuple[bytes, int]:
    if at + _LENGTH.size > len(view):
        raise FramingError(f"entry {index}: the body ends before its {what}'s length")
    (length,) = _LENGTH.unpack_from(view, at)
    start = at + _LENGTH.size
    if start + length > len(view):
        raise FramingError(f"entry {index}: the body ends within its {what} ({length} bytes said)")
    return bytes(view[start : start + length]), start + length


def joined_count(headers: Mapping[str, Any]) -> int | None:
    """How many requests or answers a message with these headers (lower-case names) joins; None when it is not
    joined. FramingError where the header says something else than a count of at least one."""
    value = headers.get(JOINED_HEADER)
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes | bytearray) else str(value)
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_COUNT_DIGITS) or int(text) < 1:
        raise FramingError(f"{JOINED_HEADER} must be a count of at least 1, got {text[:40]!r}")
    return int(text)


def request_entry(headers: Mapping[str, str], body: bytes) -> Entry:
    return Entry(dict(headers), body)


def answer_entry(status: int, headers: Mapping[str, str], body: bytes) -> Entry:
    return Entry({"status": status, "headers": dict(headers)}, body)


def answer_of(entry: Entry) -> tuple[int, dict[str, str], bytes]:
    """An answer entry's status, headers and body; FramingError where its header is not an answer's."""
    status, headers = entry.meta.get("status"), entry.meta.get("headers")
    if type(status) is not int or not 200 <= status <= 599 or not isinstance(headers, dict):
        raise FramingError("an answer's header must hold its status (200-599) and its headers")
    return status, {str(k).lower(): str(v) for k, v in headers.items()}, entry.body


def request_headers_of(entry: Entry) -> dict[str, str]:
    """A request entry's headers, lower-case names."""
    return {str(key).lower(): str(value) for key, value in entry.meta.items()}


def joined_requests(data: bytes | bytearray, count: int) -> list[tuple[dict[str, str], bytes]]:
    """Each request of a joined body, as a server takes it apart: its headers (lower-case names, without a joined
    count of its own) and its body; FramingError where the body holds anything else."""
    requests = []
    for entry in unframe(data, count):
        headers = request_headers_of(entry)
        headers.pop(JOINED_HEADER, None)
        requests.append((headers, entry.body))
    return requests


def joined_answers(answers: Iterable[tuple[int, Mapping[str, str], bytes]]) -> bytes:
    """The answers (status, headers, body) to the requests of a joined body, as one body in their order."""
    return frame(answer_entry(status, headers, body) for status, headers, body in answers)
