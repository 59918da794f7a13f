"""A real TorchServe for tests: build ``.mar`` archives and run the model server on loopback ports.

Why a real server: the handler contract (what ``data[i]`` holds, per-request status codes, batching, envelopes,
the Prometheus exporter) is defined by TorchServe's frontend and worker, so tests that only call ``handle()``
would miss the integration bugs that matter in a pod.

Isolation: every :class:`TorchServe` gets its own directory, used as working directory (``logs/``),
``TEMP`` (the frontend's ``java.io.tmpdir``, where worker sockets live) and ``TMPDIR`` (where the launcher
keeps its pid file). Without that, two instances on one machine refuse to start or share worker sockets.
The server runs in its own process group, so :meth:`TorchServe.stop` ends the launcher, the JVM and every
Python worker together.

config.properties keys written (see :meth:`TorchServe.properties`): ``inference_address``,
``management_address``, ``metrics_address``, ``grpc_inference_address``/``grpc_inference_port`` and
``grpc_management_address``/``grpc_management_port`` (free ports on 127.0.0.1; the gRPC defaults 7070/7071
would clash between instances), ``disable_token_authorization``, ``enable_model_api``, ``metrics_mode=prometheus``,
``metrics_config``, ``default_workers_per_model``, ``model_store``, ``vmargs`` (a small, quick-starting JVM),
and ``service_envelope`` when an envelope is asked for. The launcher gets
``--start --foreground --ncs --disable-token-auth --model-store ... --ts-config ... --models name=name.mar ...``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import yaml

from tests.support.net import free_port
from tests.support.prerequisites import skip_missing

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
Api = Literal["inference", "management", "metrics", "grpc", "grpc_management"]
Envelope = Literal["kserve", "kservev2"]

# A small JVM that starts quickly (C1 compiler only, serial GC): tests start many servers and never run one warm.
QUICK_START_VMARGS = "-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k"


class TorchServeError(RuntimeError):
    """TorchServe did not start, a model did not load, or the server did not stop; carries the log tail."""


@dataclass(frozen=True)
class ModelArchive:
    """What goes into one ``.mar``: ``model_config`` becomes the archiver's ``--config-file`` (batchSize, ...)."""

    name: str
    serialized_file: Path
    handler: str
    extra_files: Sequence[Path] = ()
    version: str = "1.0"
    model_config: Mapping[str, Any] = field(default_factory=dict)


def build_mar(archive: ModelArchive, store: Path) -> Path:
    """Run ``torch-model-archiver`` and return the ``.mar`` path inside ``store``."""
    store.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(VENV_BIN / "torch-model-archiver"),
        "--model-name",
        archive.name,
        "--version",
        archive.version,
        "--serialized-file",
        str(archive.serialized_file),
        "--handler",
        archive.handler,
        "--export-path",
        str(store),
        "--force",
    ]
    if archive.extra_files:
        cmd += ["--extra-files", ",".join(str(path) for path in archive.extra_files)]
    with tempfile.TemporaryDirectory(prefix="mar-") as scratch:
        if archive.model_config:
            config_file = Path(scratch) / "model-config.yaml"
            config_file.write_text(yaml.safe_dump(dict(archive.model_config)))
            cmd += ["--config-file", str(config_file)]
        env = {**os.environ, "TMPDIR": scratch}  # the archiver stages files in $TMPDIR/<model name>
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120, env=env)
    mar = store / f"{archive.name}.mar"
    if result.returncode != 0 or not mar.is_file():
        raise TorchServeError(f"torch-model-archiver failed for {archive.name}: {result.stderr or result.stdout}")
    return mar


@dataclass(frozen=True)
class Response:
    """One HTTP answer, read whole."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def process_group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process still belongs to the process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            state, _ppid, group = text[text.rindex(")") + 2 :].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the launcher's child is the JVM)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


class TorchServe:
    """One TorchServe process tree; use as a context manager or call :meth:`start` and :meth:`stop`.

    ``models`` are ``.mar`` file names (without the suffix) in ``store``; they are loaded at startup and
    :meth:`start` returns once each has a READY worker (the names in ``expect_failure``: once registered) and
    the inference API accepts connections.
    ``oip`` sets ``TS_OPEN_INFERENCE_PROTOCOL=oip`` (the frontend then serves ``/v2/health/ready`` and friends);
    ``envelope`` sets ``service_envelope`` as KServe's stock runtime does through ``TS_SERVICE_ENVELOPE``.
    """

    def __init__(
        self,
        root: Path,
        store: Path,
        models: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        oip: bool = False,
        envelope: Envelope | None = None,
        metrics_config: Path | None = None,
        enable_model_api: bool = False,
        extra_properties: Mapping[str, str] | None = None,
        expect_failure: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.store = store
        self.models = list(models)
        self.env = dict(env or {})
        self.oip = oip
        self.envelope = envelope
        self.metrics_config = metrics_config
        self.enable_model_api = enable_model_api
        self.extra_properties = dict(extra_properties or {})
        self.expect_failure = set(expect_failure)
        self.ports: dict[Api, int] = {}
        self.log_path = root / "torchserve.log"
        self._process: subprocess.Popen[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def properties(self) -> dict[str, str]:
        """The config.properties content, as a dict (ports must be chosen first)."""
        props = {
            "inference_address": f"http://{HOST}:{self.ports['inference']}",
            "management_address": f"http://{HOST}:{self.ports['management']}",
            "metrics_address": f"http://{HOST}:{self.ports['metrics']}",
            "grpc_inference_address": HOST,
            "grpc_inference_port": str(self.ports["grpc"]),
            "grpc_management_address": HOST,
            "grpc_management_port": str(self.ports["grpc_management"]),
            "disable_token_authorization": "true",
            "enable_model_api": str(self.enable_model_api).lower(),
            "metrics_mode": "prometheus",
            "default_workers_per_model": "1",
            "model_store": str(self.store),
            "vmargs": QUICK_START_VMARGS,
        }
        if self.metrics_config is not None:
            props["metrics_config"] = str(self.metrics_config)
        if self.envelope is not None:
            props["service_envelope"] = self.envelope
        props.update(self.extra_properties)
        return props

    def launch(self) -> None:
        """Start the process tree without waiting for the models (see :meth:`wait_ready`)."""
        if self._process is not None:
            raise TorchServeError("already started")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        self.ports = {name: free_port() for name in ("inference", "management", "metrics", "grpc", "grpc_management")}
        config = self.root / "config.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in self.properties().items()))
        env = {**os.environ, "TEMP": str(tmp), "TMPDIR": str(tmp), **self.env}
        env.pop("TS_CONFIG_FILE", None)  # would override --ts-config
        env.pop("TS_OPEN_INFERENCE_PROTOCOL", None)
        if self.oip:
            env["TS_OPEN_INFERENCE_PROTOCOL"] = "oip"
        cmd = [
            str(VENV_BIN / "torchserve"),
            "--start",
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            "--model-store",
            str(self.store),
            "--ts-config",
            str(config),
        ]
        if self.models:
            cmd += ["--models", *(f"{name}={name}.mar" for name in self.models)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start(self, timeout: float = 120.0) -> Self:
        self.launch()
        try:
            self.wait_ready([name for name in self.models if name not in self.expect_failure], timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the JVM (it stops its workers), then make sure the whole process group is gone.

        The JVM gets SIGTERM first so the launcher can reap it; whatever is left after ``timeout`` gets
        SIGTERM and then SIGKILL as a group. Raises if anything in the group survives.
        """
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid
        for pid in _children(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
                if process.poll() is not None and not process_group_alive(pgid):
                    return
        raise TorchServeError(f"TorchServe process group {pgid} survived SIGKILL")

    @property
    def pgid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- readiness -------------------------------------------------------------------------------------

    def worker_statuses(self, name: str) -> list[str] | None:
        """Worker states from ``GET /models/<name>`` on the management API; None when the model is unknown."""
        try:
            response = self.request("GET", f"/models/{name}", api="management", timeout=5)
        except OSError:
            return None
        if response.status != 200:
            return None
        described = response.json()
        return [str(worker.get("status")) for entry in described for worker in entry.get("workers", [])]

    def model_ready(self, name: str) -> bool:
        statuses = self.worker_statuses(name)
        return bool(statuses) and all(status == "READY" for status in statuses or [])

    def wait_ready(self, names: Sequence[str], timeout: float = 120.0) -> None:
        """Wait until every named model has only READY workers, the models expected to fail are registered, and
        the inference API accepts connections; fail fast when the server dies.

        A server whose every model is expected to fail has nothing to become READY: without the last two
        conditions it counted as started before the JVM had bound its ports.

        A port picked by :func:`free_port` can be taken by another process before the JVM binds it; then the
        server is relaunched on fresh ports (up to 3 times).
        """
        deadline = time.monotonic() + timeout
        pending = list(names)
        relaunches = 0
        while True:
            if not self.running():
                if "Address already in use" in self.log_text() and relaunches < 3:
                    relaunches += 1
                    self.stop()
                    self.launch()
                    continue
                raise TorchServeError(f"TorchServe exited before {pending} were ready:\n{self.log_tail()}")
            pending = [name for name in pending if not self.model_ready(name)]
            waiting = pending + [f"{name} registered" for name in sorted(self.expect_failure)
                                 if self.worker_statuses(name) is None]  # fmt: skip
            if not waiting and self._accepts_connections():
                return
            if time.monotonic() > deadline:
                raise TorchServeError(f"{waiting or 'the inference API'} not ready after {timeout:.0f}s:\n"
                                      f"{self.log_tail()}")  # fmt: skip
            time.sleep(0.2)

    def _accepts_connections(self) -> bool:
        try:
            self.request("GET", "/ping", timeout=5)
        except OSError:
            return False
        return True

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- HTTP ------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        api: Api = "inference",
        timeout: float = 30.0,
    ) -> Response:
        """One HTTP request to the chosen API on loopback; a fresh connection each time (thread-safe)."""
        connection = http.client.HTTPConnection(HOST, self.ports[api], timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            answer = connection.getresponse()
            return Response(answer.status, answer.reason, dict(answer.getheaders()), answer.read())
        finally:
            connection.close()

    def post(
        self, path: str, payload: Any = None, *, raw: bytes | None = None, content_type: str | None = None
    ) -> Response:
        """POST JSON (``payload``) or bytes (``raw``, sent as ``content_type`` or application/octet-stream)."""
        if raw is None:
            raw = json.dumps(payload).encode()
            content_type = content_type or "application/json"
        headers = {"Content-Type": content_type or "application/octet-stream"}
        return self.request("POST", path, raw, headers=headers)

    def predict(self, model: str, payload: Any = None, **kwargs: Any) -> Response:
        """TorchServe's own route, ``POST /predictions/<model>``."""
        return self.post(f"/predictions/{model}", payload, **kwargs)

    def predict_v1(self, model: str, payload: Any = None, **kwargs: Any) -> Response:
        """KServe v1 route, ``POST /v1/models/<model>:predict``."""
        return self.post(f"/v1/models/{model}:predict", payload, **kwargs)

    def infer_v2(self, model: str, payload: Any = None, **kwargs: Any) -> Response:
        """Open Inference Protocol route, ``POST /v2/models/<model>/infer``."""
        return self.post(f"/v2/models/{model}/infer", payload, **kwargs)

    def metrics_text(self) -> str:
        """The Prometheus exposition from the metrics port."""
        return self.request("GET", "/metrics", api="metrics").text


@contextlib.contextmanager
def running_torchservers(servers: Sequence[TorchServe], timeout: float = 180.0) -> Iterator[Sequence[TorchServe]]:
    """Start several servers at once (their startups overlap), stop them all at the end."""
    errors: list[BaseException] = []

    def start(server: TorchServe) -> None:
        try:
            server.wait_ready([name for name in server.models if name not in server.expect_failure], timeout)
        except BaseException as error:
            errors.append(error)

    try:
        for server in servers:
            server.launch()
        threads = [threading.Thread(target=start, args=(server,), daemon=True) for server in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield servers
    finally:
        stoppers = [threading.Thread(target=server.stop, daemon=True) for server in servers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


def require_torchserve() -> None:
    """Skips the calling test, saying what to install, when TorchServe cannot run here."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        skip_missing("Java 17+ for TorchServe (no java on PATH, no JAVA_HOME)", "install a JDK 17+, e.g. openjdk-17")
    for tool in ("torchserve", "torch-model-archiver"):
        if not (VENV_BIN / tool).exists():
            skip_missing(f"{tool} next to {sys.executable}", "run `make install`")
