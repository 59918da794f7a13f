"""Asking a model server's workers to post their queued inference records (``esteira.packaging.log_flush``), with
real processes: only workers that said they listen, and only in the group being stopped, get the signal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from esteira.packaging.log_flush import FLUSHED, LISTENING, flush_workers
from tests.support.waiting import eventually

# A worker stand-in: listens, says so on stdout, then waits; its "flush" notes the time it was given.
WORKER = """
import sys, time
from pathlib import Path
from esteira.packaging.log_flush import listen_for_flush
folder = Path(sys.argv[1])
def flush(within):
    (folder / "flushed-within").write_text(str(within))
    return True
assert listen_for_flush(flush, folder, 2.5)
print("listening", flush=True)
time.sleep(60)
"""


@contextmanager
def process(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """``command`` in a session (and process group) of its own, killed afterwards."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_listening_worker_flushes_when_asked_and_says_so(tmp_path: Path) -> None:
    with process([sys.executable, "-c", WORKER, str(tmp_path)]) as worker:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "listening"
        assert (tmp_path / f"{worker.pid}{LISTENING}").exists()
        assert flush_workers(tmp_path, worker.pid, within=30) == (1, 1)
        assert (tmp_path / "flushed-within").read_text() == "2.5"
        assert (tmp_path / f"{worker.pid}{FLUSHED}").exists()
        assert worker.poll() is None  # the signal did not end it


def test_a_marker_of_another_group_or_a_gone_process_gets_no_signal(tmp_path: Path) -> None:
    """A stale marker's pid may belong to anyone by now: SIGUSR1's default action would kill it."""
    with process(["sleep", "60"]) as stranger, process(["sleep", "60"]) as ours:
        (tmp_path / f"{stranger.pid}{LISTENING}").touch()
        (tmp_path / f"999999999{LISTENING}").touch()
        (tmp_path / f"not-a-pid{LISTENING}").touch()
        assert flush_workers(tmp_path, ours.pid, within=1) == (0, 0)
        assert stranger.poll() is None and ours.poll() is None


@pytest.mark.timeout(30)  # the bound below is 60 s: waiting on a killed process would take all of it
def test_a_worker_that_dies_instead_of_flushing_ends_the_wait(tmp_path: Path) -> None:
    """A process that said it listens but takes SIGUSR1's default action (killed, and not yet reaped by its
    parent): no waiting out the bound."""
    with process(["sleep", "60"]) as dying:
        (tmp_path / f"{dying.pid}{LISTENING}").touch()
        asked, flushed = flush_workers(tmp_path, dying.pid, within=60)
        assert (asked, flushed) == (1, 0)
        eventually(lambda: dying.poll() is not None, 10, "the process killed by the signal")
