"""A batch's answers leave esteira-kserve's uvicorn in one send each, together, before the next batch runs.

Why: uvicorn writes a response's status line and headers when the application starts the response and its body
in a second write, and on uvloop each write is a ``send`` at once. A batch of eight answers was sixteen system
calls and sixteen TCP segments, written one by one between the Python that completes each answer, so the client
woke for each. While a :class:`TurnHold` is held (the batcher holds it when it hands a batch of several results to
their callers), a :class:`CoalescingTransport` keeps what is written; at the end of that turn of the event loop,
before anything scheduled after the batch (its next batch included), every held connection sends what it kept
in one write. A lone request's answer is written as before: its headers leave at once and wake the client while
the body is written, which a lone caller's latency gains from.

The same protocol tells the application when a request's caller left (``CALLER_LEFT`` in the scope), so that a
request whose caller left while it waited is not run, and how long callers wait before they leave is known
(:mod:`model_handlers.batcher`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from model_handlers.inference_asgi import CALLER_LEFT

if TYPE_CHECKING:  # uvicorn is the runtime's: the hold and the transport need only asyncio
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TurnHold:
    """While held, writes through its transports wait for the end of the event loop's current turn."""

    def __init__(self) -> None:
        self.held = False
        self._waiting: list[CoalescingTransport] = []

    def until_turn_ends(self) -> None:
        """Hold writes until the callbacks already scheduled on the running loop have run (called on the loop)."""
        if not self.held:
            self.held = True
            asyncio.get_running_loop().call_soon(self.release)

    def wait(self, transport: CoalescingTransport) -> None:
        self._waiting.append(transport)

    def release(self) -> None:
        """Send what every transport kept, and write through again."""
        self.held = False
        waiting, self._waiting = self._waiting, []
        for transport in waiting:
            transport.flush()


class CoalescingTransport:
    """A transport that keeps its writes while ``hold`` is held and sends them as one write of the wrapped
    transport when it is released; everything else is the wrapped transport's. Closing or ending it sends what it
    kept first."""

    def __init__(self, transport: Any, hold: TurnHold) -> None:
        self._transport = transport
        self._hold = hold
        self._kept: list[bytes] = []
        # asked once a response by uvicorn: bound here, not found through __getattr__'s failed lookup (0.5 us)
        self.is_closing: Callable[[], bool] = transport.is_closing

    def write(self, data: bytes) -> None:
        if self._kept:
            self._kept.append(data)
        elif self._hold.held:
            self._kept.append(data)
            self._hold.wait(self)
        else:
            self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what was kept (nothing once sent, closed or aborted)."""
        if not self._kept:
            return
        data = self._kept[0] if len(self._kept) == 1 else b"".join(self._kept)
        self._kept = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + sum(len(chunk) for chunk in self._kept)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._kept = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def holding_protocol(hold: TurnHold) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol writing through :class:`CoalescingTransport`\\ s held by ``hold``; each
    request's scope carries ``CALLER_LEFT``, which says when the connection closed (uvicorn closes a connection
    as soon as it reads that the client closed it), or None while it is open."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HoldingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            self._closing = transport.is_closing
            self._left_at: float | None = None
            super().connection_made(CoalescingTransport(transport, hold))

        def connection_lost(self, exc: Exception | None) -> None:
            self.caller_left()
            super().connection_lost(exc)

        def caller_left(self) -> float | None:
            """When the connection closed: noted as it is lost, or when first seen closing if asked before."""
            if self._left_at is None and self._closing():
                self._left_at = time.perf_counter()
            return self._left_at

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[CALLER_LEFT] = self.caller_left

    return HoldingHttpToolsProtocol
