"""A revision's model server in `esteira up`: what every runtime shares, whichever server it starts.

Each server is one process tree in its own session, so its process group holds everything it started (a
JVM and its Python workers, or one Python process): a crash is the launcher's exit, and a stop leaves
nothing behind because it ends when the group is empty. A runtime says what to run, on which loopback
ports, when it is ready, and whom to ask first when stopping; the rest (environment, logs, signals,
escalation) is here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.packaging.entrypoint import runtime_environment
from esteira.packaging.joiner import Joining
from esteira.packaging.processes import group_members
from esteira.vocabulary import ENV_BATCH_SIZE, ENV_MAX_BATCH_DELAY_MS, ENV_MODEL_NAME, ENV_MODEL_VERSION, ENV_REVISION

HOST = "127.0.0.1"
# What a server writes when a port picked for it was taken before it could bind it: Netty's BindException in
# TorchServe's log and uvicorn's OSError in esteira-kserve's both say it (in either case).
PORT_TAKEN = "address already in use"
START_OUTPUT_BYTES = 1024 * 1024  # a bind failure is in the first output of a launch; a long run's log can be huge
# Variables the spec decides for the server; a value left in the user's shell must not leak into it.
_SPEC_DECIDES = (ENV_BATCH_SIZE, ENV_MAX_BATCH_DELAY_MS)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class StillStarting(RuntimeError):
    """A server that runs and has not answered its readiness check yet (a large model still loading)."""


@dataclass
class ModelServer(ABC):
    """One revision's packaged folder served on loopback by one runtime (`runtime` names it in messages)."""

    runtime: ClassVar[str]
    log_name: ClassVar[str]
    # What an exit with status 0 that nobody asked for means for this runtime.
    unasked_clean_exit: ClassVar[str] = "ended with status 0 without being asked"

    revision: int
    model_name: str
    model_version: str
    model_dir: Path
    root: Path
    spec: ModelDeploymentSpec
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. inference logging to the built-in collector
    ready: bool = False
    restarts: int = 0
    launches: int = 0  # processes started so far: counters read under two numbers were not counted by one process
    ready_since: float | None = None  # when it last became ready (time.monotonic)
    stopping: bool = False
    port_retries: int = 0  # launches in a row that found a picked port taken (not counted as restarts)
    # how many requests the router lets through to it at once while it holds them (None: it orders its own queue)
    at_once: int | None = None
    joining: Joining | None = None  # how the router joins requests to it (None: one by one)
    _process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)  # where this launch's output starts in the log

    # --- what a runtime says --------------------------------------------------------------------------------

    @property
    @abstractmethod
    def url(self) -> str | None:
        """Where the router sends inference, once ready."""

    @property
    @abstractmethod
    def metrics_url(self) -> str | None:
        """The Prometheus text with the handler's counters (errors, classes, drift), once launched."""

    @abstractmethod
    def listening(self) -> str:
        """Where it listens, for the timeline."""

    @abstractmethod
    def prepare(self) -> list[str]:
        """Pick fresh ports, write what the server reads at start, and return its command."""

    @abstractmethod
    def runtime_env(self) -> dict[str, str]:
        """The runtime's own variables (batching, protocol), on top of the shared ones."""

    @abstractmethod
    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        """Whether the model answers now (False while starting, and once the process has exited)."""

    async def before_stop(self, pgid: int) -> None:
        """What the server's processes do before they are asked to stop (nothing, unless a runtime says)."""
        del pgid

    def first_to_stop(self, pgid: int) -> int | None:
        """The process that stops the others in order when asked (None: signal the whole group)."""
        del pgid
        return None

    # --- shared ---------------------------------------------------------------------------------------------

    @property
    def pgid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.root / self.log_name

    def exited(self) -> int | None:
        """The exit status once the launcher has ended (None while it runs)."""
        return None if self._process is None else self._process.returncode

    def how_it_ended(self) -> str:
        """What died and how, for the timeline: a signal by name."""
        code = self.exited()
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name}"
        if code == 0:
            return self.unasked_clean_exit
        return f"exited with status {code}"

    def environment(self) -> dict[str, str]:
        """The user's environment without TorchServe's or the spec's variables, then the revision's identity,
        the runtime's variables and the extras; logs and temporary files under the server's folder."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_") and k not in _SPEC_DECIDES}
        env |= {
            ENV_MODEL_NAME: self.model_name,
            ENV_MODEL_VERSION: self.model_version,
            ENV_REVISION: str(self.revision),
        }
        env |= self.runtime_env()
        env |= self.extra_env
        return runtime_environment(env, self.root)

    async def launch(self) -> None:
        """Start the process tree in its own session on fresh ports; readiness comes later (`wait_ready`)."""
        self.ready, self.stopping, self.ready_since = False, False, None  # steady is since this launch's readiness
        self.launches += 1
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        command = self.prepare()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.root,
                env=self.environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 180.0) -> None:
        deadline, launched = time.monotonic() + within, self._process
        while True:
            answered = await self.check_ready(session)
            # A relaunch meanwhile (after a crash) has a wait of its own: this one ends with the process it waited for.
            if self._process is not launched or self.exited() is not None:
                raise RuntimeError(f"{self.runtime} for revision {self.revision} exited:\n{self.log_tail()}")
            if answered:
                break
            if time.monotonic() > deadline:
                raise StillStarting(f"{self.runtime} for revision {self.revision} not ready after {within:.0f}s")
            await asyncio.sleep(0.3)
        self.ready, self.port_retries, self.ready_since = True, 0, time.monotonic()

    def lost_a_port(self) -> bool:
        """Whether the last launch ended because a port picked for it was taken first.

        Ports are picked free and bound by the server a second or more later (a JVM starts slowly); any process
        can take one in between. That is no crash of the server: it deserves fresh ports, not a restart count.
        """
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return PORT_TAKEN in log.read(START_OUTPUT_BYTES).decode(errors="replace").lower()
        return False

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def stop(self, grace: float = 20.0) -> None:
        """Ask first (`first_to_stop`, else the whole group), then signal the group until nothing is left."""
        process, self.stopping, self.ready = self._process, True, False
        if process is None:
            return
        pgid = process.pid
        if process.returncode is None:
            await self.before_stop(pgid)
        target = self.first_to_stop(pgid)
        with contextlib.suppress(ProcessLookupError):
            if target is not None:
                os.kill(target, signal.SIGTERM)
            else:
                os.killpg(pgid, signal.SIGTERM)
        for sig, wait in ((None, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if process.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 0.2)
                elif not group_members(pgid):
                    if self._process is process:  # a start meanwhile has a process of its own to keep
                        self._process = None
                    return
                else:
                    await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.runtime} process group {pgid} survived SIGKILL")
