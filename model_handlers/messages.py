"""One inference request as a server received it, and the handler's answer: what passes between a server and
Esteira's handler. Kept apart from the handler (and torch) so esteira-kserve's supervisor, which only starts and
watches its worker processes, loads neither."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def never_gone() -> bool:
    """``gone`` where the server cannot tell."""
    return False


@dataclass(frozen=True)
class RawRequest:
    """One inference request as it came: body bytes and headers with lower-case names. ``gone`` says whether its
    caller has closed the connection, so that no answer can reach it any more (a server that cannot tell: never);
    ``deadline``, when its caller will have given up, where that is known."""

    body: bytes
    headers: Mapping[str, str]
    gone: Callable[[], bool] = field(default=never_gone, compare=False, repr=False)
    deadline: float | None = None  # when its caller gives up (time.perf_counter), where a proxy said


@dataclass(frozen=True)
class Answer:
    """The handler's answer to one request."""

    status: int
    body: bytes
    headers: Mapping[str, str]


def caller_gone(request: RawRequest) -> bool:
    """The batcher's ``gone`` for raw requests."""
    return request.gone()


def answered_too_late(request: RawRequest, ends: float) -> str | None:
    """The batcher's ``late`` for raw requests: why an answer at ``ends`` would come after the caller's deadline."""
    if request.deadline is None or ends <= request.deadline:
        return None
    return "could not answer within the caller's deadline"
