"""esteira-kserve's workers: their count, read from ESTEIRA_WORKERS and refused by name when out of range, the
supervisor, here with stand-in worker processes (a stop signal passed on, a worker's own exit stopping the rest, the
Unix socket it bound accepted on by every worker), and that socket's binding."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_handlers.workers import MAX_WORKERS, Supervisor, unix_listener, workers_from_env


def test_one_worker_unless_asked() -> None:
    assert workers_from_env({}) == 1
    assert workers_from_env({"ESTEIRA_WORKERS": " "}) == 1
    assert workers_from_env({"ESTEIRA_WORKERS": "3"}) == 3


@pytest.mark.parametrize(("limit", "workers"), [("1", 1), ("4", 4), ("200", MAX_WORKERS)])
def test_auto_is_one_worker_per_cpu_of_the_container_limit(limit: str, workers: int) -> None:
    assert workers_from_env({"ESTEIRA_WORKERS": "auto", "OMP_NUM_THREADS": limit}) == workers


@pytest.mark.parametrize(
    ("value", "reason"), [("0", "outside 1..64"), (str(MAX_WORKERS + 1), "outside"), ("two", "not an integer")]
)
def test_a_bad_count_is_refused_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"ESTEIRA_WORKERS={value!r}|ESTEIRA_WORKERS={value}") as refused:
        workers_from_env({"ESTEIRA_WORKERS": value})
    assert reason in str(refused.value) and "or auto" in str(refused.value)


@pytest.fixture
def own_signal_handlers() -> Iterator[None]:
    """The supervisor installs its handlers in this process: the test's are put back after."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _worker(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_that_exits_by_itself_stops_the_others_and_gives_its_status(
    tmp_path: Path, own_signal_handlers: None
) -> None:
    # Worker 0 exits with 3 once worker 1 is up; worker 1 notes a SIGTERM, and without one ends after a minute.
    code = (
        "import os, pathlib, signal, sys, time\n"
        "index, home = os.environ['ESTEIRA_WORKER_INDEX'], pathlib.Path(os.environ['PROMETHEUS_MULTIPROC_DIR'])\n"
        "if index == '0':\n"
        "    while not (home / 'up').exists(): time.sleep(0.01)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, lambda *_: ((home / 'stopped').touch(), sys.exit(0)))\n"
        "(home / 'up.new').write_text(os.environ['ESTEIRA_TORCH_THREADS'])\n"
        "(home / 'up.new').rename(home / 'up'); time.sleep(60)\n"
    )
    assert Supervisor(_worker(code), 2, {**os.environ, "ESTEIRA_TORCH_THREADS": "5"}, tmp_path).run() == 3
    assert (tmp_path / "stopped").exists()  # worker 1 was stopped, not waited out
    assert (tmp_path / "up").read_text() == "5"  # a thread count set outright is the workers' too


def test_a_stop_signal_is_passed_on_and_ends_in_a_clean_exit(tmp_path: Path, own_signal_handlers: None) -> None:
    # Each worker says it is up; the supervisor is then signalled, as the kubelet does; a worker exits 0 on SIGTERM.
    code = (
        "import os, pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "home = pathlib.Path(os.environ['PROMETHEUS_MULTIPROC_DIR'])\n"
        "mine = home / os.environ['ESTEIRA_WORKER_INDEX']\n"
        "mine.with_suffix('.new').write_text(os.environ['ESTEIRA_TORCH_THREADS'])\n"
        "mine.with_suffix('.new').rename(mine); time.sleep(60)\n"
    )
    supervisor = Supervisor(_worker(code), 2, {**os.environ, "OMP_NUM_THREADS": "8"}, tmp_path)

    def signal_when_up() -> None:
        while not ((tmp_path / "0").exists() and (tmp_path / "1").exists()):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_up, daemon=True).start()
    assert supervisor.run() == 0
    assert not supervisor.running
    assert (tmp_path / "0").read_text() == "3"  # its torch threads: its share of 8 CPUs, less one for its server


def test_every_worker_accepts_on_the_unix_socket_the_supervisor_bound(
    tmp_path: Path, own_signal_handlers: None
) -> None:
    # Each worker accepts one connection on the socket it inherited and answers with its index.
    code = (
        "import os, signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "listener = socket.socket(fileno=int(os.environ['ESTEIRA_UNIX_SOCKET_FD']))\n"
        "listener.listen()\n"
        "connection, _ = listener.accept()\n"
        "connection.sendall(os.environ['ESTEIRA_WORKER_INDEX'].encode()); connection.close(); time.sleep(60)\n"
    )
    path = tmp_path / "server.sock"
    supervisor = Supervisor(_worker(code), 2, os.environ, tmp_path, unix_listener(path))
    answers: list[bytes] = []

    def call_each_worker_then_stop() -> None:
        for _ in range(2):
            with socket.socket(socket.AF_UNIX) as client:
                while client.connect_ex(str(path)) != 0:  # until a worker listens
                    time.sleep(0.01)
                answers.append(client.recv(16))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=call_each_worker_then_stop, daemon=True).start()
    assert supervisor.run() == 0
    assert sorted(answers) == [b"0", b"1"]


def test_the_unix_socket_is_the_owners_alone_and_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    unix_listener(path).close()  # a server killed before it removed its socket leaves the file behind
    with unix_listener(path) as listener:
        assert listener.getsockname() == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_unix_socket_a_live_server_listens_on_is_left_to_it(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    with unix_listener(path) as live:
        live.listen()
        with pytest.raises(OSError, match=f"a server already listens on {path}"):
            unix_listener(path)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # still the live server's


def test_a_unix_socket_path_that_does_not_fit_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "server.sock"
    with pytest.raises(ValueError, match="longer than a Unix socket's address"):
        unix_listener(path)


def test_a_file_that_is_no_socket_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    path.write_text("someone's data")
    with pytest.raises(OSError, match="Address already in use"):
        unix_listener(path)
    assert path.read_text() == "someone's data"
