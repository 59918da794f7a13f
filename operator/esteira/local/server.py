"""TorchServe as a revision's model server in `esteira up`: one process tree on free loopback ports.

The packaged folder's config.properties goes through the same `runtime_config` as in a pod (the batching and
workers the spec sets, read from the variables the operator gives a pod; paths moved to the folder), then every
address is moved to 127.0.0.1 on free ports so several revisions run side by side. Stopping asks the Java
frontend first (it stops its workers in order), then signals the whole group, so no JVM or Python worker outlives
the server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.local.model_server import HOST, ModelServer, free_port
from esteira.packaging import admission
from esteira.packaging.config import CONFIG_PATH, MODEL_STORE, set_properties
from esteira.packaging.entrypoint import (
    LOG_FLUSH_DIR,
    PID_FILE,
    batch_settings_from_env,
    batches_and_workers,
    frontend_pid,
    joined_config,
    log_config_file,
    runtime_config,
    torchserve_command,
    worker_threads,
    workers_asked,
    write_log_config,
)
from esteira.packaging.log_flush import flush_workers
from esteira.render.inferenceservice import server_variables
from esteira.vocabulary import ENV_JOINED_REQUESTS, ENV_LOG_FLUSH_DIR, ENV_TORCHSERVE_VMARGS

__all__ = [
    "DEFAULT_VMARGS",
    "FORCED_PROPERTIES",
    "HOST",
    "Ports",
    "TorchServeServer",
    "free_port",
    "local_config",
]

# TorchServe's own JIT and garbage collector, with a heap cap. A JVM held to the C1 compiler
# (-XX:TieredStopAtLevel=1) starts a little sooner but gives up the optimising compiler for good: in `make bench`
# runs it served 0.70x to 1.0x the requests at 32 callers, never more. ESTEIRA_TORCHSERVE_VMARGS replaces them.
DEFAULT_VMARGS = "-Xmx512m"


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


def local_config(
    text: str, spec: ModelDeploymentSpec, model_dir: Path, ports: Ports, vmargs: str = DEFAULT_VMARGS
) -> str:
    """The pod's runtime config, with every listener on loopback and the JVM flags ``vmargs``."""
    variables = server_variables(spec)
    settings, workers = batch_settings_from_env(variables), workers_asked(variables)
    text = runtime_config(text, settings, str(model_dir), workers)
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
            "vmargs": vmargs,
            **FORCED_PROPERTIES,
        },
    )


@dataclass
class TorchServeServer(ModelServer):
    """TorchServe serving one revision's packaged folder."""

    runtime: ClassVar[str] = "TorchServe"
    log_name: ClassVar[str] = "torchserve.log"
    unasked_clean_exit: ClassVar[str] = (
        "ended without being asked: its Java frontend was killed or crashed, and the launcher then exited with status 0"
    )

    ports: Ports | None = None
    threads: dict[str, str] = field(default_factory=dict)  # each worker's torch threads, when it starts several

    @property
    def url(self) -> str | None:
        return f"http://{HOST}:{self.ports.inference}" if self.ports and self.ready else None

    def metrics_address(self) -> str | None:
        """TorchServe's metrics port, ``http://HOST:PORT``, once launched (each launch picks a fresh one)."""
        return f"http://{HOST}:{self.ports.metrics}" if self.ports else None

    @property
    def metrics_url(self) -> str | None:
        address = self.metrics_address()
        return f"{address}/metrics" if address else None

    def listening(self) -> str:
        assert self.ports is not None
        return f"{HOST}:{self.ports.inference}, metrics :{self.ports.metrics}"

    def prepare(self) -> list[str]:
        """The folder's config.properties as a pod would run it, moved to fresh loopback ports."""
        self.ports = Ports.pick()
        source = (self.model_dir / CONFIG_PATH).read_text()
        config = self.root / "config.properties"
        vmargs = os.environ.get(ENV_TORCHSERVE_VMARGS) or DEFAULT_VMARGS
        text = local_config(source, self.spec, self.model_dir, self.ports, vmargs)
        self.threads = worker_threads(text, os.environ)
        self.at_once = admission.at_once(batches_and_workers(text))
        delay_ms = batch_settings_from_env(server_variables(self.spec)).max_batch_delay_ms
        text, self.joining = joined_config(text, delay_ms)  # the router joins requests as the pod's front does
        if self.joining is not None:
            self.threads[ENV_JOINED_REQUESTS] = str(self.joining.most)
        config.write_text(text)
        log_config = log_config_file(self.model_dir, self.root)
        write_log_config(log_config, self.model_dir)
        command = torchserve_command(
            str(config), str(self.model_dir / MODEL_STORE), ["--disable-token-auth"], log_config=str(log_config)
        )
        command[0] = torchserve_binary()
        return command

    def runtime_env(self) -> dict[str, str]:
        return {"TS_OPEN_INFERENCE_PROTOCOL": "oip", ENV_LOG_FLUSH_DIR: str(self.root / LOG_FLUSH_DIR), **self.threads}

    async def before_stop(self, pgid: int) -> None:
        """The workers post their queued inference records: the frontend's shutdown kills them (SIGKILL)."""
        await asyncio.to_thread(flush_workers, self.root / LOG_FLUSH_DIR, pgid)

    def first_to_stop(self, pgid: int) -> int | None:
        """The Java frontend: its shutdown stops the workers in order (signalled first, they would be respawned)."""
        return frontend_pid(self.root / "tmp" / PID_FILE, pgid)

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
