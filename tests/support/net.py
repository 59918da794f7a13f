"""Loopback ports for the servers tests start.

A port the kernel picks for ``bind(("127.0.0.1", 0))`` comes from its ephemeral range, the same range every
outgoing connection takes its local port from: between the pick and the server's own bind, a client anywhere on
the machine (another test worker's load, a real client's connections) can take it, and the server fails with
"address already in use" (TorchServe's gRPC port did, once, in CI). So servers get ports below that range, which
no outgoing connection uses, each pytest-xdist worker from its own share, handed out in turn and checked free.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
LOWEST = 10_000  # below: ports well-known services listen on
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def listening_ports(ephemeral_low: int, worker: int, workers: int) -> range:
    """This worker's share of the ports from ``LOWEST`` up to the ephemeral range's first."""
    share = (ephemeral_low - LOWEST) // max(workers, 1)
    start = LOWEST + worker * share
    return range(start, start + share)


def ephemeral_low() -> int | None:
    """The first of the kernel's ephemeral ports, where Linux says it."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _worker() -> tuple[int, int]:
    """(this process's pytest-xdist worker index, how many workers); (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return index, max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)


def _candidates() -> Iterator[int] | None:
    low = ephemeral_low()
    if low is None or low - LOWEST < 1_000:  # no room below the ephemeral range: take the kernel's pick
        return None
    ports = listening_ports(low, *_worker())
    start = random.randrange(len(ports))  # a rerun does not start on the ports the last run left in TIME_WAIT
    return itertools.cycle([*ports[start:], *ports[:start]])


_NEXT = _candidates()


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this worker's share (see above)."""
    if _NEXT is not None:
        for _ in range(1_000):
            port = next(_NEXT)
            if _free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
