"""One inference request as a server received it, and the handler's answer: what passes between a server and
Esteira's handler. Kept apart from the handler (and torch) so esteira-kserve's supervisor, which only starts and
watches its worker processes, loads neither."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def _never() -> bool:
    return False


@dataclass(frozen=True)
class RawRequest:
    """One inference request as it came: body bytes and headers with lower-case names. ``gone`` says whether its
    caller has closed the connection, so that no answer can reach it any more (a server that cannot tell: never)."""

    body: bytes
    headers: Mapping[str, str]
    gone: Callable[[], bool] = field(default=_never, compare=False, repr=False)


@dataclass(frozen=True)
class Answer:
    """The handler's answer to one request."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def caller_gone(request: RawRequest) -> bool:
    """The batcher's ``gone`` for raw requests."""
    return request.gone()
