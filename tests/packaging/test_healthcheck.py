"""Readiness from TorchServe's management API: workers READY for every model in the snapshot."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from esteira.packaging import healthcheck
from esteira.packaging.config import ModelSpec, config_properties, parse_properties, set_properties
from esteira.packaging.healthcheck import Target, check, management_address, ready_workers, targets


def worker(status: str) -> dict[str, Any]:
    return {"id": "9000", "status": status, "pid": 1}


def test_targets_from_snapshot() -> None:
    props = parse_properties(
        config_properties([ModelSpec("iris", "1", min_workers=2, max_workers=4), ModelSpec("d", "1")])
    )
    assert targets(props) == [Target("iris", 2), Target("d", 1)]
    assert targets({}) == []


def test_management_address_env_override_only_when_enabled() -> None:
    props = {"management_address": "http://127.0.0.1:8081", "enable_envvars_config": "true"}
    assert management_address(props, {"TS_MANAGEMENT_ADDRESS": "http://0.0.0.0:9091"}) == "http://127.0.0.1:9091"
    props["enable_envvars_config"] = "false"
    assert management_address(props, {"TS_MANAGEMENT_ADDRESS": "http://0.0.0.0:9091"}) == "http://127.0.0.1:8081"


def test_ready_workers_counts_only_ready() -> None:
    description = [{"workers": [worker("READY"), worker("UNLOADING")]}, {"workers": [worker("READY")]}]
    assert ready_workers(description) == 2
    assert ready_workers([{"workers": []}]) == 0
    assert ready_workers({"error": "nope"}) == 0


class _Fake(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, Any]] = {}

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path, (404, {"code": 404}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_management() -> Iterator[tuple[str, dict[str, tuple[int, Any]]]]:
    answers: dict[str, tuple[int, Any]] = {}
    handler = type("Handler", (_Fake,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


def _props(address: str) -> dict[str, str]:
    text = config_properties([ModelSpec("iris", "1.0.0", min_workers=2, max_workers=2)])
    return parse_properties(set_properties(text, {"management_address": address}))


def test_check_ready(fake_management: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    address, answers = fake_management
    answers["/models/iris"] = (200, [{"modelName": "iris", "workers": [worker("READY"), worker("READY")]}])
    assert check(_props(address), {}) == []


def test_check_not_enough_workers(fake_management: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    address, answers = fake_management
    answers["/models/iris"] = (200, [{"modelName": "iris", "workers": [worker("READY"), worker("WORKER_STOPPED")]}])
    assert check(_props(address), {}) == ["iris: 1 of 2 workers ready"]


def test_check_model_not_registered(fake_management: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    address, _ = fake_management
    (problem,) = check(_props(address), {})
    assert problem.startswith("iris: ") and "404" in problem


def test_check_nothing_listening() -> None:
    (problem,) = check(_props("http://127.0.0.1:9"), {}, timeout=0.5)
    assert problem.startswith("iris: ")


def test_main_exit_codes(fake_management: tuple[str, dict[str, tuple[int, Any]]], tmp_path: Path) -> None:
    address, answers = fake_management
    config = tmp_path / "config.properties"
    config.write_text(set_properties(config_properties([ModelSpec("iris", "1.0.0")]), {"management_address": address}))
    assert healthcheck.main(["--config", str(config)]) == 1
    answers["/models/iris"] = (200, [{"workers": [worker("READY")]}])
    assert healthcheck.main(["--config", str(config)]) == 0
    assert healthcheck.main(["--config", str(tmp_path / "absent.properties")]) == 1
