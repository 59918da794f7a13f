"""A CloudEvents endpoint on loopback for inference-log tests: it keeps every POST (headers and body) and
answers as the test says, so a test can refuse posts, then accept them."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
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
    """An HTTP/1.1 server on loopback that keeps every POST and answers with ``answer(posts so far)``: a status
    and headers, and a body when the headers carry one under ``body``."""
    posts: list[Post] = []

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(Post(self.client_address[1], dict(self.headers), body))
            status, headers = answer(posts)
            said = {**headers}
            content = said.pop("body", "").encode()
            self.send_response(status)
            for name, value in {**said, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


class RefusingUntilSet:
    """A sink's ``answer``: 503 to every post until ``accepting`` is set, then 204, keeping what it accepted (a
    collector that is down, then back)."""

    def __init__(self) -> None:
        self.accepting = threading.Event()
        self.accepted: list[Post] = []

    def __call__(self, posts: list[Post]) -> tuple[int, dict[str, str]]:
        if not self.accepting.is_set():
            return 503, {}
        self.accepted.append(posts[-1])
        return 204, {}

    def delivered_ids(self) -> set[str]:
        """The ids of the records in the posts it accepted."""
        return {record["id"] for post in self.accepted for record in json.loads(post.body)}


def predict_iris(base_url: str, request_ids: Iterable[str]) -> None:
    """One iris KServe v1 request per id (sent as ``x-request-id``), each answered 200."""
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    for request_id in request_ids:
        headers = {"Content-Type": "application/json", "x-request-id": request_id}
        request = urllib.request.Request(f"{base_url}/v1/models/iris:predict", body, headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
