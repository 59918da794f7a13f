"""One inference request as a server received it, and the handler's answer: what passes between a server and
Esteira's handler. Kept apart from the handler (and torch) so esteira-kserve's supervisor, which only starts and
watches its worker processes, loads neither."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def never_left() -> float | None:
    """``left`` where the server cannot tell."""
    return None


@dataclass(frozen=True)
class RawRequest:
    """One inference request as it came: body bytes and headers with lower-case names. ``left`` says when its
    caller closed the connection (``time.perf_counter``), so that no answer can reach it any more, or None while
    it is there (a server that cannot tell: always None); ``deadline``, when its caller will have given up, where
    that is known."""

    body: bytes
    headers: Mapping[str, str]
    left: Callable[[], float | None] = field(default=never_left, compare=False, repr=False)
    deadline: float | None = None  # when its caller gives up (time.perf_counter), where a proxy said


@dataclass(frozen=True)
class Answer:
    """The handler's answer to one request."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def caller_left(request: RawRequest) -> float | None:
    """The batcher's ``left`` for raw requests."""
    return request.left()


def answered_too_late(request: RawRequest, ends: float) -> str | None:
    """The batcher's ``late`` for raw requests: why an answer at ``ends`` would come after the caller's deadline."""
    if request.deadline is None or ends <= request.deadline:
        return None
    return "could not answer within the caller's deadline"
