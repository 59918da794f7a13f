"""The esteira-kserve model server as a pod runs it: ``python -m model_handlers.kserve_server`` on a packaged
folder, in its own environment (.tools/kserve-runtime-venv, ``make kserve-runtime``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from tests.support.prerequisites import require_file
from tests.support.torchserve import free_port

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PYTHON = REPO / ".tools" / "kserve-runtime-venv" / "bin" / "python"


class KServeRuntimeProcess:
    """esteira-kserve serving ``model_dir``; ``url`` is where clients connect (the same surface as the front)."""

    def __init__(self, model_dir: Path, root: Path, model_version: str) -> None:
        self.model_dir, self.root, self.model_version = model_dir, root, model_version
        self.port = free_port()
        self.log_path = root / "esteira-kserve.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, within: float = 120.0) -> Self:
        require_file(RUNTIME_PYTHON, "run `make kserve-runtime`")
        self.root.mkdir(parents=True, exist_ok=True)
        command = [str(RUNTIME_PYTHON), "-m", "model_handlers.kserve_server", "--model-dir", str(self.model_dir)]
        command += ["--work-dir", str(self.root / "work"), "--http-port", str(self.port)]
        env = {**os.environ, "ESTEIRA_MODEL_VERSION": self.model_version}
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + within
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"esteira-kserve did not become ready:\n{self.log_tail()}")
            time.sleep(0.3)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=3) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends it; KServe's server drains and exits."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"esteira-kserve ignored SIGTERM:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])
