"""A model server process as a pod runs it: started in its own process group, ready when its v2 readiness
route says so, stopped with SIGTERM as the kubelet stops a pod, and nothing of its group left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.torchserve import free_port, process_group_alive

REPO = Path(__file__).resolve().parents[2]


class PodProcess:
    """Subclasses say what to run (`command`) and with what environment; `url` is where clients connect."""

    what = "the model server"
    log_name = "model-server.log"

    def __init__(self, model_dir: Path, root: Path, model_version: str) -> None:
        self.model_dir, self.root, self.model_version = model_dir, root, model_version
        self.port = free_port()
        self.log_path = root / self.log_name
        self._process: subprocess.Popen[bytes] | None = None
        self._exit_status: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, f"{self.what} is not running"
        return self._process.pid

    def exit_status(self) -> int | None:
        """The process's exit status once it has exited (by itself, or stopped); None while it runs."""
        return self._exit_status if self._process is None else self._process.poll()

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return {**os.environ, "ESTEIRA_MODEL_VERSION": self.model_version}

    def launch(self) -> None:
        """Start the process and return at once (``start`` also waits until it is ready). Refused while one runs: a
        second would replace the first, which nothing would then stop (``with server.start()`` starts twice)."""
        if self._process is not None:
            raise RuntimeError(f"{self.what} is already running (pid {self._process.pid}): stop it first")
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, within: float = 180.0) -> Self:
        self.launch()
        assert self._process is not None
        deadline = time.monotonic() + within
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.what} did not become ready:\n{self.log_tail()}")
            time.sleep(0.3)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=3) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends it; then nothing of the process group may be left."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise RuntimeError(f"{self.what} ignored SIGTERM:\n{self.log_tail()}") from None
        self._exit_status = process.returncode
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
