"""esteira-kserve as a revision's model server in `esteira up`: Esteira's handler on KServe's model server.

KServe's package cannot live in the project's environment (its pins clash with the Kubernetes client's), so
the server runs with another Python: `--kserve-python`, else `ESTEIRA_KSERVE_PYTHON`, else the one
`make kserve-runtime` builds in the repository (`.tools/kserve-runtime-venv`). Which one is settled, and
checked to import KServe and the handlers, before anything starts. The server is one process on one
loopback port: inference, readiness (`/v2/models/<name>/ready`) and Prometheus metrics (`/metrics`, the
same handler series TorchServe exports, without its Hostname label) share it. It listens on a Unix socket in
the revision's folder too, which the router sends inference to: on one machine a hop without TCP let the router
answer 4-8 % more requests at 1, 8 and 32 callers (a folder too deep for a socket's address keeps it on the port).
There, and only there, the server reads requests the router joined: what would queue beyond two of its batches
goes joined (:mod:`esteira.packaging.joiner`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import aiohttp

import esteira
from esteira.local.model_server import HOST, ModelServer, free_port
from esteira.packaging.config import CONFIG_PATH
from esteira.packaging.entrypoint import batch_settings_from_env, batches_and_workers
from esteira.packaging.joiner import Joining
from esteira.packaging.surface import served_model
from esteira.packaging.upstream import UNIX_SCHEME, fits_unix_socket
from esteira.render.inferenceservice import server_variables
from esteira.vocabulary import ENV_KSERVE_PYTHON, ESTEIRA_KSERVE_RUNTIME
from model_handlers.workers import workers_from_env

SERVER_MODULE = "model_handlers.kserve_server"
SOCKET_NAME = "http.sock"
REPOSITORY_PYTHON = Path(esteira.__file__).resolve().parents[2] / ".tools" / "kserve-runtime-venv" / "bin" / "python"
HOW_TO_GET_IT = (
    f"run `make kserve-runtime` (it builds {REPOSITORY_PYTHON}), or point --kserve-python or {ENV_KSERVE_PYTHON} "
    "at a Python that imports kserve and model_handlers"
)
# Finds the packages without importing them (KServe and torch take seconds to import); prints what is missing.
_IMPORT_CHECK = (
    "import importlib.util, sys; missing = [m for m in ('kserve', 'model_handlers') if importlib.util.find_spec(m) "
    "is None]; print(' '.join(missing)); sys.exit(1 if missing else 0)"
)


class RuntimeUnavailable(RuntimeError):
    """The spec asks for a runtime this machine cannot start."""


def find_kserve_python(explicit: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The Python to run esteira-kserve with, checked; RuntimeUnavailable says why not and how to get one."""
    if explicit is not None:
        return _checked(explicit, "--kserve-python")
    if environ.get(ENV_KSERVE_PYTHON):
        return _checked(Path(environ[ENV_KSERVE_PYTHON]), ENV_KSERVE_PYTHON)
    if REPOSITORY_PYTHON.exists():
        return _checked(REPOSITORY_PYTHON, "the repository's .tools/kserve-runtime-venv")
    raise RuntimeUnavailable(
        f"spec.model.runtime {ESTEIRA_KSERVE_RUNTIME} needs KServe's model server, and this machine has none: "
        f"{HOW_TO_GET_IT}"
    )


def _checked(python: Path, source: str) -> Path:
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise RuntimeUnavailable(
            f"spec.model.runtime {ESTEIRA_KSERVE_RUNTIME}: {source} names {python}, which is not an executable "
            f"file; {HOW_TO_GET_IT}"
        )
    try:
        result = subprocess.run(
            [str(python), "-c", _IMPORT_CHECK], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeUnavailable(
            f"spec.model.runtime {ESTEIRA_KSERVE_RUNTIME}: {python} ({source}) did not run: {exc}; {HOW_TO_GET_IT}"
        ) from None
    if result.returncode != 0:
        missing = result.stdout.strip() or result.stderr.strip()[-200:]
        raise RuntimeUnavailable(
            f"spec.model.runtime {ESTEIRA_KSERVE_RUNTIME}: {python} ({source}) cannot import {missing}; {HOW_TO_GET_IT}"
        )
    return python


@dataclass
class KServeServer(ModelServer):
    """esteira-kserve serving one revision's packaged folder (`python -m model_handlers.kserve_server`)."""

    runtime: ClassVar[str] = ESTEIRA_KSERVE_RUNTIME
    log_name: ClassVar[str] = "esteira-kserve.log"

    python: Path = field(kw_only=True)
    port: int | None = None

    @property
    def socket_path(self) -> Path | None:
        """Where the server listens besides its port, when the revision's folder is short enough for a socket."""
        path = self.root / SOCKET_NAME
        return path if fits_unix_socket(path) else None

    @property
    def url(self) -> str | None:
        """Where the router sends inference: the Unix socket, else the port."""
        if not (self.port and self.ready):
            return None
        path = self.socket_path
        return f"{UNIX_SCHEME}{path}" if path is not None else f"http://{HOST}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{HOST}:{self.port}/metrics" if self.port else None

    def listening(self) -> str:
        path = self.socket_path
        return f"{HOST}:{self.port}{f' and {path}' if path is not None else ''}, metrics on /metrics"

    def prepare(self) -> list[str]:
        self.port = free_port()
        self.joining = self.router_joining()
        # While callers give up or say their deadlines, the router holds what is past two batches, newest first
        # (esteira.packaging.admission): joined oldest first, their answers came after their callers had left.
        self.at_once = self.joining.at_once if self.joining is not None else None
        return [
            str(self.python),
            "-m",
            SERVER_MODULE,
            f"--model-dir={self.model_dir}",
            f"--work-dir={self.root / 'work'}",
            f"--host={HOST}",
            f"--http-port={self.port}",
            *([f"--unix-socket={path}"] if (path := self.socket_path) is not None else []),
        ]

    def router_joining(self) -> Joining | None:
        """How the router joins requests to this server while it is busy: up to a batch in one, two joined requests
        a worker at once, within the model's body limit; only on the Unix socket, the one place the server reads
        joined requests (:mod:`model_handlers.inference_asgi`). None where it listens on the port alone, does not
        batch, or would refuse its settings (it then says why as it starts)."""
        if self.socket_path is None:
            return None
        env = self.environment()
        try:
            batch_size = batch_settings_from_env(env).batch_size
            workers = workers_from_env(env)
            if batch_size is None:  # the archive's, as the server reads it
                batch_size = batches_and_workers((self.model_dir / CONFIG_PATH).read_text())[0][0]
            max_body = served_model(self.model_dir).config.max_body_bytes
        except (OSError, ValueError, RuntimeError, IndexError):  # ConfigError is a RuntimeError
            return None
        return Joining.for_batcher(batch_size, workers, max_body)

    def runtime_env(self) -> dict[str, str]:
        """Batching only as far as the spec sets it (the server takes the rest from the archive), and the server
        processes where it sets them (else the shell's ``ESTEIRA_WORKERS``, if any, reaches the server)."""
        return server_variables(self.spec)

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        """The model loaded and answering: the server registers its routes only after loading it."""
        if self.port is None or self.exited() is not None:
            return False
        url = f"http://{HOST}:{self.port}/v2/models/{self.model_name}/ready"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
