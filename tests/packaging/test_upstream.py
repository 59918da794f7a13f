"""The lean upstream clients against a scripted HTTP/1.1 server: framing, keep-alive, reuse after errors and after a
stale connection, timeouts, and errors that name no address. Every test runs on asyncio's loop, on uvloop's, and
with the blocking client (the inference log's) in a thread beside the scripted server's loop."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from esteira.local.server import free_port
from esteira.packaging.upstream import (
    BlockingUpstream,
    Disconnected,
    TimedOut,
    Unreachable,
    Upstream,
    request_head,
)
from esteira.packaging.upstream import (
    Reply as Answer,
)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop, "blocking": asyncio.new_event_loop}


class Threaded:
    """The blocking client, called from the scenario's loop through a worker thread."""

    def __init__(self, address: str, answer_seconds: float | None = 60.0) -> None:
        self.blocking = BlockingUpstream(address, answer_seconds=answer_seconds)

    async def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        return await asyncio.to_thread(self.blocking.request, method, target, body, headers)

    def close(self) -> None:
        self.blocking.close()


def client(loop: str, address: str, answer_seconds: float | None = 60.0) -> Upstream | Threaded:
    if loop == "blocking":
        return Threaded(address, answer_seconds)
    return Upstream(address, answer_seconds=answer_seconds)


@dataclass
class Seen:
    """One request as the scripted server read it."""

    connection: int
    head: bytes
    body: bytes


Reply = Callable[[Seen], Awaitable[bytes | None]]  # raw bytes to send; None: close without answering


@dataclass
class Scripted:
    """A server answering the n-th request with ``replies[n]`` (the last one repeats); it records what it read."""

    replies: list[Reply]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                seen = Seen(connection, head, await reader.readexactly(length))
                self.seen.append(seen)
                reply = self.replies[min(len(self.seen), len(self.replies)) - 1]
                answer = await reply(seen)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    break
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
        finally:
            writer.close()


def answer(status: str, body: bytes, *headers: str) -> Reply:
    async def reply(_: Seen) -> bytes:
        lines = [f"HTTP/1.1 {status}", *headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    return reply


def sized(status: str, body: bytes, *headers: str) -> Reply:
    return answer(status, body, f"Content-Length: {len(body)}", "Content-Type: application/json", *headers)


def chunked(pieces: list[bytes]) -> Reply:
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    return answer("200 OK", encoded, "Transfer-Encoding: chunked", "Content-Type: application/json")


async def hang_up(_: Seen) -> None:
    return None


@asynccontextmanager
async def serving(*replies: Reply) -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted(list(replies))
    port = free_port()
    server = await asyncio.start_server(script.handle, "127.0.0.1", port)
    try:
        yield script, f"http://127.0.0.1:{port}"
    finally:
        server.close()


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(scenario())


@pytest.fixture(params=sorted(LOOPS))
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_sized_answers_are_read_whole_and_one_connection_carries_them(loop: str) -> None:
    async def scenario() -> None:
        async with serving(sized("200 OK", b'{"ok": 1}', "X-Binary-Data: 1")) as (script, url):
            upstream = client(loop, url)
            for n in range(3):
                reply = await upstream.request("POST", "/v1/models/m:predict", b'{"n": %d}' % n, {"Accept": "x/y"})
                assert (reply.status, reply.reason, reply.body) == (200, "OK", b'{"ok": 1}')
                assert reply.headers["content-type"] == "application/json" and reply.headers["x-binary-data"] == "1"
            assert script.connections == 1
            assert [seen.body for seen in script.seen] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
            first = script.seen[0].head.decode()
            assert first.startswith("POST /v1/models/m:predict HTTP/1.1\r\n")
            assert f"Host: {url.removeprefix('http://')}\r\n" in first and "Accept: x/y\r\n" in first
            upstream.close()

    run(loop, scenario)


def test_a_chunked_answer_is_joined_and_the_connection_reused(loop: str) -> None:
    async def scenario() -> None:
        async with serving(chunked([b'{"a": ', b"[1, 2", b"]}"]), sized("200 OK", b"{}")) as (script, url):
            upstream = client(loop, url)
            assert (await upstream.request("POST", "/", b"x")).body == b'{"a": [1, 2]}'
            assert (await upstream.request("POST", "/", b"x")).body == b"{}"
            assert script.connections == 1

    run(loop, scenario)


def test_an_answer_delimited_by_the_connection_end_is_whole_and_its_connection_not_reused(loop: str) -> None:
    body = b'{"long": "' + b"z" * 100_000 + b'"}'

    async def scenario() -> None:
        async with serving(answer("200 OK", body, "Connection: close"), sized("200 OK", b"{}")) as (script, url):
            upstream = client(loop, url)
            assert (await upstream.request("POST", "/", b"x")).body == body
            assert (await upstream.request("POST", "/", b"x")).body == b"{}"
            assert script.connections == 2

    run(loop, scenario)


def test_error_answers_keep_the_connection_for_the_next_request(loop: str) -> None:
    async def scenario() -> None:
        error = sized("500 Internal Server Error", b'{"message": "boom"}')
        async with serving(error, sized("404 Not Found", b""), sized("200 OK", b"{}")) as (script, url):
            upstream = client(loop, url)
            failed = await upstream.request("POST", "/", b"x")
            assert (failed.status, failed.reason, failed.body) == (500, "Internal Server Error", b'{"message": "boom"}')
            assert (await upstream.request("POST", "/", b"x")).status == 404
            assert (await upstream.request("POST", "/", b"x")).status == 200
            assert script.connections == 1

    run(loop, scenario)


def test_a_connection_the_server_dropped_while_idle_is_replaced_without_failing_the_request(loop: str) -> None:
    async def scenario() -> None:
        async with serving(sized("200 OK", b"1"), hang_up, sized("200 OK", b"2")) as (script, url):
            upstream = client(loop, url)
            assert (await upstream.request("POST", "/", b"x")).body == b"1"
            assert (await upstream.request("POST", "/", b"x")).body == b"2"  # first try met a closing connection
            assert script.connections == 2 and len(script.seen) == 3

    run(loop, scenario)


def test_a_fresh_connection_closed_before_answering_is_disconnected(loop: str) -> None:
    async def scenario() -> None:
        async with serving(hang_up, sized("200 OK", b"ok")) as (script, url):
            upstream = client(loop, url)
            with pytest.raises(Disconnected, match="closed before a complete answer"):
                await upstream.request("POST", "/", b"x")
            assert (await upstream.request("POST", "/", b"x")).body == b"ok"
            assert len(script.seen) == 2  # a request on a new connection is not sent twice

    run(loop, scenario)


def test_an_answer_cut_short_is_disconnected_and_the_next_request_gets_a_new_connection(loop: str) -> None:
    cut = answer("200 OK", b"a" * 10, "Content-Length: 100", "Connection: close")

    async def scenario() -> None:
        async with serving(sized("200 OK", b"1"), cut, sized("200 OK", b"3")) as (script, url):
            upstream = client(loop, url)
            assert (await upstream.request("POST", "/", b"x")).body == b"1"
            with pytest.raises(Disconnected):  # part of an answer came: it is not sent again
                await upstream.request("POST", "/", b"x")
            assert (await upstream.request("POST", "/", b"x")).body == b"3"
            assert script.connections == 2 and len(script.seen) == 3

    run(loop, scenario)


def test_no_answer_in_time_is_timed_out_and_that_connection_is_closed(loop: str) -> None:
    async def never(_: Seen) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def scenario() -> None:
        async with serving(never, sized("200 OK", b"ok")) as (script, url):
            upstream = client(loop, url, answer_seconds=0.3)
            with pytest.raises(TimedOut, match=r"within 0\.3s"):
                await upstream.request("POST", "/", b"x")
            assert (await upstream.request("POST", "/", b"x")).body == b"ok"
            assert script.connections == 2

    run(loop, scenario)


def test_an_unreachable_server_is_named_by_what_failed_never_by_its_address(loop: str) -> None:
    async def scenario() -> None:
        port = free_port()
        with pytest.raises(Unreachable) as failed:
            await client(loop, f"http://127.0.0.1:{port}").request("POST", "/", b"x")
        assert "cannot connect" in str(failed.value)
        assert str(port) not in str(failed.value) and "127.0.0.1" not in str(failed.value)

    run(loop, scenario)


def test_head_and_204_answers_have_no_body(loop: str) -> None:
    announced = answer("200 OK", b"", "Content-Length: 42")  # a HEAD answer announces a length it does not send

    async def scenario() -> None:
        async with serving(announced, answer("204 No Content", b""), sized("200 OK", b"after")) as (script, url):
            upstream = client(loop, url)
            head = await upstream.request("HEAD", "/ping")
            assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "42")
            assert (await upstream.request("GET", "/")).status == 204
            assert (await upstream.request("GET", "/")).body == b"after"
            assert script.connections == 2  # the HEAD's connection is not reused; the 204's is

    run(loop, scenario)


def test_informational_answers_are_skipped_and_the_answer_goes_to_its_own_request(loop: str) -> None:
    """A 100 Continue (TorchServe's Netty sends one to ``Expect: 100-continue``) or a 103 Early Hints comes before the
    answer: taken for it, the answer stayed on the connection for the next request."""

    async def continued(seen: Seen) -> bytes:
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body)
            + seen.body
        )

    async def hinted(seen: Seen) -> bytes:
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        return hints + b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body

    async def echo(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body

    async def scenario() -> None:
        async with serving(continued, hinted, echo) as (script, url):
            upstream = client(loop, url)
            first = await upstream.request("POST", "/predictions/m", b"caller-1", {"Expect": "100-continue"})
            assert (first.status, first.reason, first.body) == (200, "OK", b"caller-1")
            second = await upstream.request("POST", "/predictions/m", b"caller-2")
            assert (second.status, second.reason, second.body) == (201, "Created", b"caller-2")
            assert "link" not in second.headers  # the hint's headers are not the answer's
            assert (await upstream.request("POST", "/predictions/m", b"caller-3")).body == b"caller-3"
            assert script.connections == 1

    run(loop, scenario)


def test_large_bodies_cross_both_ways_intact(loop: str) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB

    async def echo(seen: Seen) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(seen.body) + seen.body

    async def scenario() -> None:
        async with serving(echo) as (_, url):
            assert (await client(loop, url).request("POST", "/", big)).body == big

    run(loop, scenario)


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="'X-Evil' holds a line break"):
        request_head("POST", "/", "h:1", {"X-Evil": "a\r\nHost: elsewhere"}, 0)
    head = request_head("POST", "/p", "h:1", {"Accept": "a/b"}, 3)
    assert head == b"POST /p HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\nAccept: a/b\r\n\r\n"


def test_the_blocking_client_speaks_tls_and_checks_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inference log may post to an https:// collector: the certificate is verified against the trusted
    ones (here a self-signed one made trusted through SSL_CERT_FILE) and the connection is kept."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    names = ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run([*request, *names], check=True, capture_output=True)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def scenario() -> None:
        script = Scripted([sized("200 OK", b"secret")])
        port = free_port()
        server = await asyncio.start_server(script.handle, "127.0.0.1", port, ssl=served)
        try:
            untrusting = BlockingUpstream(f"https://localhost:{port}")
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.to_thread(untrusting.request, "POST", "/v1/records", b"x")
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            trusting = BlockingUpstream(f"https://localhost:{port}")
            for _ in range(2):
                reply = await asyncio.to_thread(trusting.request, "POST", "/v1/records", b"x")
                assert (reply.status, reply.body) == (200, b"secret")
            assert script.connections == 1 and len(script.seen) == 2  # both on one connection
            trusting.close()
        finally:
            server.close()

    run("asyncio", scenario)


@asynccontextmanager
async def serving_unix(folder: Path, *replies: Reply) -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted(list(replies))
    path = folder / "server.sock"
    server = await asyncio.start_unix_server(script.handle, str(path))
    try:
        yield script, f"unix:{path}"
    finally:
        server.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_server_on_a_unix_socket_is_reached_and_its_connection_kept(loop: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving_unix(tmp_path, sized("200 OK", b'{"ok": 1}')) as (script, address):
            upstream = Upstream(address)
            for n in range(3):
                reply = await upstream.request("POST", "/v1/models/m:predict", b'{"n": %d}' % n)
                assert (reply.status, reply.body) == (200, b'{"ok": 1}')
            assert script.connections == 1
            assert [seen.body for seen in script.seen] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
            assert "\r\nHost: localhost\r\n" in script.seen[0].head.decode()
            upstream.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_missing_unix_socket_is_unreachable_without_naming_its_path(loop: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(Unreachable) as failed:
            await Upstream(f"unix:{tmp_path / 'gone.sock'}").request("POST", "/", b"x")
        assert "cannot connect" in str(failed.value) and str(tmp_path) not in str(failed.value)

    run(loop, scenario)


def test_a_unix_address_names_an_absolute_path() -> None:
    with pytest.raises(ValueError, match=r"'unix:server\.sock' is not unix:/PATH"):
        Upstream("unix:server.sock")
