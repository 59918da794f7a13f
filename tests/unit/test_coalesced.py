"""A batch's answers kept while the turn hold is held and sent together, one write per connection."""

from __future__ import annotations

import asyncio
from typing import Any

from model_handlers.coalesced import CoalescingTransport, TurnHold


class Transport:
    """Records each write; closing stops the writes, as an asyncio transport ignores writes once closing."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(data)
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def test_writes_go_through_at_once_while_nothing_is_held() -> None:
    wrapped = Transport()
    transport = CoalescingTransport(wrapped, TurnHold())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"{}")
    assert wrapped.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"{}"]


def test_a_held_turn_sends_each_connection_what_it_kept_in_one_write_before_what_comes_after() -> None:
    hold = TurnHold()
    first, second = Transport(), Transport()
    seen_by_next: list[tuple[list[bytes], list[bytes]]] = []

    async def scenario() -> None:
        hold.until_turn_ends()
        hold.until_turn_ends()  # holding twice in a turn releases once
        asyncio.get_running_loop().call_soon(lambda: seen_by_next.append((list(first.writes), list(second.writes))))
        a, b = CoalescingTransport(first, hold), CoalescingTransport(second, hold)
        a.write(b"head-1 ")
        b.write(b"head-2 ")
        a.write(b"body-1")
        b.writelines([b"body-2", b"!"])
        assert (first.writes, second.writes) == ([], [])
        assert a.get_write_buffer_size() == 7 + len(b"head-1 body-1")
        await asyncio.sleep(0)
        assert not hold.held
        a.write(b"after")  # released: through at once
        assert first.writes == [b"head-1 body-1", b"after"]

    asyncio.run(scenario())
    assert seen_by_next == [([b"head-1 body-1"], [b"head-2 body-2!"])]
    assert second.writes == [b"head-2 body-2!"]


def test_closing_or_ending_sends_what_was_kept_first_aborting_drops_it_and_a_closed_peer_gets_nothing() -> None:
    hold = TurnHold()
    closed, ended, aborted, gone = Transport(), Transport(), Transport(), Transport()

    async def scenario() -> None:
        hold.until_turn_ends()
        transports = [CoalescingTransport(wrapped, hold) for wrapped in (closed, ended, aborted, gone)]
        for transport in transports:
            transport.write(b"answer")
        transports[0].close()
        transports[1].write_eof()
        transports[2].abort()
        gone.closing = True  # the peer left before the turn ended
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert (closed.events, closed.writes) == (["write", "close"], [b"answer"])
    assert (ended.events, ended.writes) == (["write", "eof"], [b"answer"])
    assert (aborted.events, aborted.writes) == (["abort"], [])
    assert gone.writes == []


def test_everything_else_is_the_wrapped_transports() -> None:
    transport = CoalescingTransport(Transport(), TurnHold())
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False
