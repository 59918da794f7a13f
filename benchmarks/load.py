"""One load point with wrk, and the CPU both sides spent on it.

Why wrk: a C load generator with a Lua script for POST bodies costs a fraction of a core where a Python client
would be the bottleneck on a 2-core machine. Its own CPU is measured (``os.wait4`` on its process) and every
point says whether the generator could have limited the figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

SCRIPT = Path(__file__).resolve().parent / "post.lua"
# Above this many cores of its own, the load generator competes with the server on a small machine.
LOADGEN_CPU_LIMIT = 0.5


class LoadError(RuntimeError):
    """wrk is missing or did not report."""


@dataclass(frozen=True)
class Point:
    """One run of wrk against one URL."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    loadgen_cores: float
    server_cores: float
    server_cpu_us_per_request: float

    @property
    def loadgen_bound(self) -> bool:
        return self.loadgen_cores > LOADGEN_CPU_LIMIT

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "loadgen_bound": self.loadgen_bound}


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise LoadError("wrk is not installed: run `make tools` as root (apt-get install wrk) or install wrk 4")
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and all their descendants (gone ones count as 0)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def run_point(
    url: str, body: Path, content_type: str, concurrency: int, seconds: float, server_pids: list[int]
) -> Point:
    """``concurrency`` connections from one wrk thread for ``seconds``, each sending ``body`` back to back."""
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type}
    command = [wrk_binary(), "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(SCRIPT), url]
    server_before = cpu_seconds(server_pids)
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - began
    server_cpu = cpu_seconds(server_pids) - server_before
    report = next((line for line in output.splitlines() if line.startswith('{"requests"')), None)
    if process.returncode != 0 or report is None:
        raise LoadError(f"wrk failed on {url} (exit {process.returncode}):\n{output[-2000:]}")
    figures = json.loads(report)
    requests = max(int(figures["requests"]), 1)
    duration = figures["duration_us"] / 1e6
    return Point(
        rps=round(figures["requests"] / duration, 1),
        p50_ms=round(figures["p50_us"] / 1000, 2),
        p99_ms=round(figures["p99_us"] / 1000, 2),
        errors=int(figures["bad_status"]) + int(figures["socket_errors"]),
        loadgen_cores=round((usage.ru_utime + usage.ru_stime) / elapsed, 3),
        server_cores=round(server_cpu / elapsed, 3),
        server_cpu_us_per_request=round(server_cpu / requests * 1e6, 1),
    )


def median_point(points: list[Point]) -> Point:
    """The run with the median throughput (its latencies and CPU belong to it); errors summed over all runs."""
    ordered = sorted(points, key=lambda point: point.rps)
    middle = ordered[len(ordered) // 2]
    return Point(**{**asdict(middle), "errors": sum(point.errors for point in points)})
