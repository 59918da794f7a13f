"""esteira-kserve in several processes (``ESTEIRA_WORKERS``): one event loop per CPU the pod may use.

Why processes: one esteira-kserve process runs its HTTP, its batcher and the model on one event loop, so it
uses one CPU however many the pod has (the GIL keeps threads from sharing the Python work). On a 2-CPU machine
two processes answered 1.6x the requests of one at 32 callers, with the load generator on the same CPUs.

How: the supervisor (this process, without torch) starts ``workers`` copies of the server, each of which loads
the model and listens on the same port with ``SO_REUSEPORT``: the kernel spreads connections among them. A Unix
socket (``--unix-socket``) has one listener, bound by the supervisor and inherited by every worker, which all
accept on it. A stopping supervisor (SIGTERM, SIGINT) passes the signal on and waits for every worker to answer
what it holds and post its queued inference records; a worker that exits by itself stops the others and the
supervisor exits non-zero, so the pod restarts whole rather than serving on fewer workers than it was given.

Metrics: every worker writes its series to files in one directory (``prometheus_client``'s multiprocess mode);
a scrape, of any worker's ``/metrics`` or of the supervisor's metrics port, adds the workers' counters and
histograms up. A scrape sees each worker's updates within a second (the handler's metrics buffer flushes the
scraped worker's at once, the others' within their interval). The per-process series (``process_*``,
``python_*``) are not exported in this mode: the container's CPU and memory come from the kubelet.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from esteira.packaging.cpus import available_cpus, threads_per_process
from esteira.packaging.entrypoint import workers_asked
from esteira.packaging.upstream import fits_unix_socket
from esteira.vocabulary import ENV_TORCH_THREADS, ENV_WORKERS, MAX_UNIX_SOCKET_PATH, MAX_WORKERS

logger = logging.getLogger(__name__)

AUTO = "auto"  # one worker per CPU of the container's limit
ENV_WORKER_INDEX = "ESTEIRA_WORKER_INDEX"  # set by the supervisor on each worker it starts
ENV_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode: read when it is imported
ENV_UNIX_SOCKET_FD = "ESTEIRA_UNIX_SOCKET_FD"  # set by the supervisor: the Unix socket its workers all accept on


def workers_from_env(env: Mapping[str, str]) -> int:
    """How many server processes to run: 1 unless ``ESTEIRA_WORKERS`` says, ``auto`` one per CPU the container may
    use (its CPU limit, which the runtime passes as ``OMP_NUM_THREADS``); ValueError names a bad value."""
    if env.get(ENV_WORKERS, "").strip() == AUTO:
        return min(MAX_WORKERS, available_cpus(env))
    try:
        return workers_asked(env) or 1
    except ValueError as error:
        raise ValueError(f"{error} (or {AUTO}: one per CPU)") from None


def is_worker(env: Mapping[str, str]) -> bool:
    """Whether this process is one a supervisor started."""
    return ENV_WORKER_INDEX in env


def exposed_registry(directory: str | None, first: Collector | None = None) -> CollectorRegistry:
    """The registry a scrape reads: this process's own, or with workers (``directory``: where they write) every
    worker's series added up, ``first`` (which flushes this process's pending updates) run before the files are
    read."""
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    if first is not None:
        registry.register(first)
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def tcp_listener(host: str, port: int, shared: bool = False) -> socket.socket:
    """A socket bound to ``host:port``; ``shared``: one the other workers bind too (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def unix_listener(path: Path) -> socket.socket:
    """A Unix socket bound at ``path`` that only its owner may connect to; a socket left there by a server that was
    killed is replaced, one a live server listens on is not (OSError). ValueError when the path is longer than a
    Unix socket's address allows."""
    if not fits_unix_socket(path):
        raise ValueError(f"{path} is longer than a Unix socket's address ({MAX_UNIX_SOCKET_PATH} bytes)")
    if path.is_socket():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(str(path)) == 0:
                raise OSError(errno.EADDRINUSE, f"a server already listens on {path}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o600)
    return sock


def inherited_unix_listener(env: Mapping[str, str]) -> socket.socket | None:
    """The Unix socket a supervisor bound for its workers, if it passed one."""
    fd = env.get(ENV_UNIX_SOCKET_FD)
    return socket.socket(fileno=int(fd)) if fd else None


class Supervisor:
    """Starts the workers, passes a stop signal on, and exits when they have all gone."""

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        env: Mapping[str, str],
        metrics_dir: Path,
        unix: socket.socket | None = None,
    ) -> None:
        self.command = list(command)
        self.unix = unix  # bound here, accepted on by every worker: a path has one listener
        self.workers = workers
        self.env = dict(env)
        self.metrics_dir = metrics_dir
        self.running: dict[int, int] = {}  # pid -> worker index
        # Held: a Popen dropped while its process runs is polled, and may be reaped, when the next one starts,
        # and this supervisor would then never see that worker exit.
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def run(self) -> int:
        """Serve until stopped; the exit status: 0 after a stop signal, else the first failed worker's."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for index in range(self.workers):
            env = {**self.env, ENV_WORKER_INDEX: str(index), ENV_METRICS_DIR: str(self.metrics_dir)}
            env.setdefault(ENV_TORCH_THREADS, str(threads_per_process(self.env, self.workers)))
            passed: tuple[int, ...] = ()
            if self.unix is not None:
                passed = (self.unix.fileno(),)
                env[ENV_UNIX_SOCKET_FD] = str(passed[0])
            child = subprocess.Popen(self.command, env=env, pass_fds=passed)
            self.processes.append(child)
            self.running[child.pid] = index
            if self.stopping:
                os.kill(child.pid, signal.SIGTERM)
        status = 0
        while self.running:
            pid, wait_status = os.wait()
            if pid not in self.running:
                continue
            index = self.running.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if not self.stopping:
                logger.error("esteira-kserve worker %d (pid %d) exited with %d: stopping the others", index, pid, code)
                status = code or 1
                self._stop(signal.SIGTERM, None)
        return status

    def _stop(self, signum: int, _: FrameType | None) -> None:
        self.stopping = True
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):  # gone since: its exit is waited for
                os.kill(pid, signum)


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command that runs one worker: this server with the same arguments."""
    return [sys.executable, "-m", "model_handlers.kserve_server", *argv]
