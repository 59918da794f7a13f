"""A stopping TorchServe asks its Python workers to post their queued inference records before it kills them.

Why: TorchServe's frontend ends its workers with SIGKILL (``Process.destroyForcibly``), so the records a worker
still holds (the last linger's, or a backlog kept while the collector refused posts) went down with it, and a
canary pod stopped at the end of a rollout lost its last evidence. Whoever stops TorchServe (the pod's
entrypoint on SIGTERM, ``esteira up`` retiring a revision) first asks the workers to flush, and waits for them.

How, with files in one folder (``ESTEIRA_LOG_FLUSH_DIR``, set by whoever runs TorchServe; without it no worker
listens): a worker that logs inference installs a handler for ``FLUSH_SIGNAL`` and writes ``<pid>.listening``;
on the signal it flushes (in a thread of its own: the signal can land while the serving thread holds the
outbox's state) and writes ``<pid>.flushed``. The supervisor signals only workers that said they listen and
belong to the process group it started (a stale file's pid may be anyone's by now), and waits until each has
flushed or exited. A worker that never listened is not signalled: ``SIGUSR1``'s default action would kill it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from esteira.packaging.processes import in_group

FLUSH_SIGNAL = signal.SIGUSR1
FLUSH_SECONDS = 5.0  # a stopping server waits at most this for a worker's queued records (pods get 30 s to stop)
LISTENING = ".listening"
FLUSHED = ".flushed"
POLL_SECONDS = 0.05


def listen_for_flush(flush: Callable[[float], bool], directory: Path, within: float) -> bool:
    """In a worker: flush for up to ``within`` seconds on ``FLUSH_SIGNAL``, then say so. Whether it listens
    (a handler can be installed from the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    pid = os.getpid()

    def flush_and_say() -> None:
        flush(within)
        (directory / f"{pid}{FLUSHED}").touch()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=flush_and_say, name="esteira-log-flush", daemon=True).start()

    directory.mkdir(parents=True, exist_ok=True)
    signal.signal(FLUSH_SIGNAL, on_signal)
    (directory / f"{pid}{FLUSHED}").unlink(missing_ok=True)
    (directory / f"{pid}{LISTENING}").touch()
    return True


def clear_markers(directory: Path) -> None:
    """Remove what workers of an earlier run wrote (the folder outlives a container restart): their pids may be
    reused by the processes of the next, which never listened and which the flush signal would kill."""
    for marker in [*directory.glob(f"*{LISTENING}"), *directory.glob(f"*{FLUSHED}")]:
        with contextlib.suppress(OSError):
            marker.unlink()


def flush_workers(directory: Path, group: int, within: float = FLUSH_SECONDS + 1.0) -> tuple[int, int]:
    """In a supervisor: ask every listening worker of process ``group`` to flush, and wait up to ``within``
    seconds for them (a worker gives its flush ``FLUSH_SECONDS``). Returns (workers asked, workers that said
    they flushed)."""
    asked = []
    for marker in directory.glob(f"*{LISTENING}"):
        number = marker.name.removesuffix(LISTENING)
        pid = int(number) if number.isdigit() else 0
        if pid <= 0 or not in_group(pid, group):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, FLUSH_SIGNAL)
            asked.append(pid)
    deadline = time.monotonic() + within
    pending = set(asked)
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if not (directory / f"{pid}{FLUSHED}").exists() and in_group(pid, group)}
        if pending:
            time.sleep(POLL_SECONDS)
    flushed = sum((directory / f"{pid}{FLUSHED}").exists() for pid in asked)
    return len(asked), flushed
