"""One inference request as a server received it, and the handler's answer: what passes between a server and
Esteira's handler. Kept apart from the handler (and torch) so esteira-kserve's supervisor, which only starts and
watches its worker processes, loads neither."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RawRequest:
    """One inference request as it came: body bytes and headers with lower-case names."""

    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Answer:
    """The handler's answer to one request."""

    status: int
    body: bytes
    headers: Mapping[str, str]
