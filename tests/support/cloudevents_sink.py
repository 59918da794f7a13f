"""A CloudEvents endpoint on loopback for inference-log tests: it keeps every POST (headers and body) and
answers as the test says, so a test can refuse posts, then accept them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    port: int  # the client's port: one per connection
    headers: dict[str, str]
    body: bytes


@contextmanager
def sink(answer: Callable[[list[Post]], tuple[int, dict[str, str]]]) -> Iterator[tuple[str, list[Post]]]:
    """An HTTP/1.1 server on loopback that keeps every POST and answers with ``answer(posts so far)``."""
    posts: list[Post] = []

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(Post(self.client_address[1], dict(self.headers), body))
            status, headers = answer(posts)
            self.send_response(status)
            for name, value in {"Content-Length": "0", **headers}.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()
