"""The real operator as a separate process, the way it runs in a pod: `python -m esteira.controller`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port


class OperatorProcess:
    """Starts the operator against a kubeconfig and waits until its liveness endpoint answers.

    `namespaces=None` watches all namespaces.
    """

    def __init__(
        self,
        kubeconfig: str,
        namespaces: list[str] | None,
        log_path: Path,
        resync_seconds: float = 30.0,
        extra_args: list[str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.log_path = log_path
        self.args = [
            sys.executable,
            "-m",
            "esteira.controller",
            "--kubeconfig",
            kubeconfig,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness-port",
            str(self.liveness_port),
            "--resync-seconds",
            str(resync_seconds),
            "--log-format",
            "plain",
            *([arg for ns in namespaces for arg in ("--namespace", ns)] if namespaces else ["--all-namespaces"]),
            *(extra_args or []),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.log()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def counters(self) -> dict[str, float]:
        """Reconciles by what they planned from (``watch``, ``api``, ``stale``) and, as ``calls``, every Kubernetes
        API call so far."""
        families = {family.name: family for family in text_string_to_metric_families(self.metrics())}
        found = {s.labels["source"]: s.value for s in families["esteira_operator_reconcile_reads"].samples}
        api = families["esteira_operator_api_calls"].samples
        return found | {"calls": sum(s.value for s in api if s.name.endswith("_total"))}

    def rss_bytes(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
