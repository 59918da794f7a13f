"""One TorchServe process tree per revision, on free loopback ports, in its own folder and process group.

The packaged folder's config.properties goes through the same `runtime_config` as in a pod (batching from
the spec, paths moved to the folder), then every address is moved to 127.0.0.1 on free ports so several
revisions run side by side. Stopping asks the Java frontend first (it stops its workers in order), then
signals the whole group, so no JVM or Python worker outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.packaging.config import CONFIG_PATH, MODEL_STORE, set_properties
from esteira.packaging.entrypoint import (
    PID_FILE,
    BatchSettings,
    frontend_pid,
    log_config_file,
    runtime_config,
    runtime_environment,
    torchserve_command,
    write_log_config,
)

HOST = "127.0.0.1"
# A small JVM that starts quickly: C1 only, serial GC.
_VMARGS = "-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            state, _ppid, group = text[text.rindex(")") + 2 :].split()[:3]
            if int(group) == pgid and state != "Z":
                members.append(int(stat.parent.name))
    return members


def torchserve_binary() -> str:
    beside = Path(sys.executable).parent / "torchserve"
    return str(beside) if beside.exists() else (shutil.which("torchserve") or "torchserve")


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    grpc: int
    grpc_management: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


# Whatever a model folder's own config.properties says: no model registration API (it loads code from URLs),
# no per-model pip installs, and no token auth (only the router, on loopback, talks to these servers).
FORCED_PROPERTIES = {
    "enable_model_api": "false",
    "disable_token_authorization": "true",
    "install_py_dep_per_model": "false",
}


def local_config(text: str, spec: ModelDeploymentSpec, model_dir: Path, ports: Ports) -> str:
    """The pod's runtime config, with every listener on loopback and a quick-starting JVM."""
    batching = BatchSettings(spec.batching.max_batch_size, spec.batching.max_batch_delay_ms)
    text = runtime_config(text, batching, str(model_dir))
    return set_properties(
        text,
        {
            "inference_address": f"http://{HOST}:{ports.inference}",
            "management_address": f"http://{HOST}:{ports.management}",
            "metrics_address": f"http://{HOST}:{ports.metrics}",
            "grpc_inference_address": HOST,
            "grpc_management_address": HOST,
            "grpc_inference_port": str(ports.grpc),
            "grpc_management_port": str(ports.grpc_management),
            "vmargs": _VMARGS,
            **FORCED_PROPERTIES,
        },
    )


@dataclass
class ModelServer:
    """TorchServe serving one revision's packaged folder."""

    revision: int
    model_name: str
    model_version: str
    model_dir: Path
    root: Path
    spec: ModelDeploymentSpec
    ports: Ports | None = None
    ready: bool = False
    restarts: int = 0
    _process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    stopping: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. inference logging to the built-in collector

    @property
    def url(self) -> str | None:
        return f"http://{HOST}:{self.ports.inference}" if self.ports and self.ready else None

    @property
    def metrics_url(self) -> str | None:
        return f"http://{HOST}:{self.ports.metrics}/metrics" if self.ports else None

    @property
    def pgid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.root / "torchserve.log"

    def exited(self) -> int | None:
        """The exit status once the launcher has ended (None while it runs)."""
        return None if self._process is None else self._process.returncode

    def how_it_ended(self) -> str:
        """What died and how, for the timeline: a signal by name; status 0 means the Java frontend went first."""
        code = self.exited()
        if code is None:
            return "is running"
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name}"
        if code == 0:
            return (
                "ended without being asked: its Java frontend was killed or crashed, and the launcher then exited "
                "with status 0"
            )
        return f"exited with status {code}"

    async def launch(self) -> None:
        """Start the process tree on fresh ports; readiness comes later (`wait_ready`)."""
        self.ready, self.stopping = False, False
        self.ports = Ports.pick()
        self.root.mkdir(parents=True, exist_ok=True)
        source = (self.model_dir / CONFIG_PATH).read_text()
        config = self.root / "config.properties"
        config.write_text(local_config(source, self.spec, self.model_dir, self.ports))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env |= {
            "ESTEIRA_MODEL_NAME": self.model_name,
            "ESTEIRA_MODEL_VERSION": self.model_version,
            "ESTEIRA_REVISION": str(self.revision),
            "TS_OPEN_INFERENCE_PROTOCOL": "oip",
            "LOG_LOCATION": str(self.root / "logs"),
            "METRICS_LOCATION": str(self.root / "logs"),
        }
        env |= self.extra_env
        env = runtime_environment(env, self.root)
        (self.root / "tmp").mkdir(exist_ok=True)
        log_config = log_config_file(self.model_dir, self.root)
        write_log_config(log_config, self.model_dir)
        command = torchserve_command(
            str(config), str(self.model_dir / MODEL_STORE), ["--disable-token-auth"], log_config=str(log_config)
        )
        command[0] = torchserve_binary()
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.root,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        """Every worker of the model READY, per the management API."""
        if self.ports is None or self.exited() is not None:
            return False
        url = f"http://{HOST}:{self.ports.management}/models/{self.model_name}"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
                if response.status != 200:
                    return False
                described = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        statuses = [w.get("status") for entry in described for w in entry.get("workers", [])]
        return bool(statuses) and all(s == "READY" for s in statuses)

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 180.0) -> None:
        deadline = time.monotonic() + within
        while not await self.check_ready(session):
            if self.exited() is not None:
                raise RuntimeError(f"TorchServe for revision {self.revision} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"TorchServe for revision {self.revision} not ready after {within:.0f}s")
            await asyncio.sleep(0.3)
        self.ready = True

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def stop(self, grace: float = 20.0) -> None:
        """Frontend first (it stops its workers), then the whole group, until nothing in it is left."""
        process, self.stopping, self.ready = self._process, True, False
        if process is None:
            return
        pgid = process.pid
        target = frontend_pid(self.root / "tmp" / PID_FILE, pgid)
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
                    self._process = None
                    return
                else:
                    await asyncio.sleep(0.1)
        raise RuntimeError(f"TorchServe process group {pgid} survived SIGKILL")
