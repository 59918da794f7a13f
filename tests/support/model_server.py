"""Esteira's model server as a pod runs it: ``python -m esteira.packaging.entrypoint`` on a packaged folder.

Every listener goes to a free loopback port through the same ``TS_*`` variables the ServingRuntime sets, so
the front, TorchServe behind it and the handler are the ones a cluster runs. The process gets SIGTERM at the
end, like a pod being stopped, and must take its whole process group down with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.torchserve import free_port, process_group_alive


class ModelServerProcess:
    """The entrypoint serving ``model_dir``; ``url`` is the front, where clients connect."""

    def __init__(self, model_dir: Path, root: Path, model_version: str) -> None:
        self.model_dir, self.root, self.model_version = model_dir, root, model_version
        self.port = free_port()
        self.log_path = root / "model-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        ports = [free_port() for _ in range(5)]
        return {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ESTEIRA_RUNTIME_DIR": str(self.root / "runtime"),
            "ESTEIRA_MODEL_VERSION": self.model_version,
            "ESTEIRA_BACKEND_ADDRESS": f"http://127.0.0.1:{ports[0]}",
            "TS_INFERENCE_ADDRESS": self.url,
            "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{ports[1]}",
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{ports[2]}",
            "TS_GRPC_INFERENCE_PORT": str(ports[3]),
            "TS_GRPC_MANAGEMENT_PORT": str(ports[4]),
            "TS_OPEN_INFERENCE_PROTOCOL": "oip",
            "TS_DISABLE_TOKEN_AUTHORIZATION": "true",
        }

    def start(self, within: float = 180.0) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "esteira.packaging.entrypoint", "--model-dir", str(self.model_dir)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + within
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the model server did not become ready:\n{self.log_tail()}")
            time.sleep(0.3)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=3) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM to the entrypoint, as the kubelet sends it; then nothing of its group may be left."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise RuntimeError(f"the model server ignored SIGTERM:\n{self.log_tail()}") from None
        deadline = time.monotonic() + 30
        while process_group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
