"""Start-up of Esteira's model server: apply the operator's batching and workers to TorchServe's model snapshot,
then run TorchServe in the foreground.

KServe mounts the model at ``/mnt/models`` read-only, and TorchServe reads workers and batching from
``model_snapshot`` in ``config.properties`` (no ``TS_*`` variable reaches the snapshot). So the operator's
``ESTEIRA_BATCH_SIZE``, ``ESTEIRA_MAX_BATCH_DELAY_MS`` and ``ESTEIRA_WORKERS`` are written into a copy of the
file in a writable directory, and TorchServe starts from that copy. The copy also turns ``enable_envvars_config``
on, so the runtime's ``TS_*`` variables (addresses, Open Inference Protocol) apply whatever the archive's file says.

Clients do not talk to TorchServe directly: the front (``esteira.packaging.front``) listens on the inference
address TorchServe would have used and answers the KServe v1 / Open Inference Protocol routes TorchServe lacks,
while TorchServe's inference API moves to ``ESTEIRA_BACKEND_ADDRESS`` on loopback.

This process does not exec TorchServe: its command-line launcher starts the Java frontend as a child and dies
at once on SIGTERM without passing the signal on, so as PID 1 it would leave the JVM to be killed mid-request
when the pod stops. Instead the launcher runs in its own process group, a termination signal goes to the
frontend (whose shutdown stops the workers in order), and this process waits until the whole group has exited,
reaping orphans on the way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from esteira.packaging.config import (
    CONFIG_PATH,
    DEFAULT_MODEL_DIR,
    MAX_MESSAGE_BYTES,
    MODEL_STORE,
    dump_snapshot,
    parse_properties,
    set_properties,
)
from esteira.packaging.cpus import threads_per_process
from esteira.packaging.heap import freeze_startup_heap
from esteira.packaging.log_flush import clear_markers, flush_workers
from esteira.packaging.logs import LOG_CONFIG_PATH, log4j2_xml
from esteira.vocabulary import (
    ENV_BATCH_SIZE,
    ENV_IDLE_POLL_US,
    ENV_JOINED_REQUESTS,
    ENV_LOG_FLUSH_DIR,
    ENV_MAX_BATCH_DELAY_MS,
    ENV_MODEL_VERSION,
    ENV_TORCH_THREADS,
    ENV_WORKERS,
    MAX_WORKERS,
)

if TYPE_CHECKING:
    from esteira.packaging.joiner import Joining

ENV_MODEL_DIR = "ESTEIRA_MODEL_DIR"
ENV_RUNTIME_DIR = "ESTEIRA_RUNTIME_DIR"
ENV_BACKEND_ADDRESS = "ESTEIRA_BACKEND_ADDRESS"
ENV_BACKEND_METRICS_ADDRESS = "ESTEIRA_BACKEND_METRICS_ADDRESS"
DEFAULT_BACKEND_ADDRESS = "http://127.0.0.1:8079"
DEFAULT_BACKEND_METRICS_ADDRESS = "http://127.0.0.1:8078"
DEFAULT_INFERENCE_ADDRESS = "http://127.0.0.1:8080"
DEFAULT_MANAGEMENT_ADDRESS = "http://127.0.0.1:8081"
DEFAULT_METRICS_ADDRESS = "http://127.0.0.1:8082"
DEFAULT_RUNTIME_DIR = "/tmp/esteira"
RUNTIME_CONFIG = "config.properties"
PID_FILE = ".model_server.pid"
LOG_FLUSH_DIR = "log-flush"  # under the runtime directory: where workers say they flush (log_flush)
MAX_IDLE_POLL_US = 1000  # longer is not waiting for a caller's next request but burning a core
# Keys that name files under the model directory: moved along when the model is mounted elsewhere.
_PATH_KEYS = ("model_store", "metrics_config")


@dataclass(frozen=True)
class BatchSettings:
    """Batching from the operator; None leaves the archive's own value."""

    batch_size: int | None = None
    max_batch_delay_ms: int | None = None

    @property
    def empty(self) -> bool:
        return self.batch_size is None and self.max_batch_delay_ms is None


def int_env(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """An integer variable within low..high; None when unset or empty, ValueError naming it when malformed."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside {low}..{high}")
    return value


def batch_settings_from_env(env: Mapping[str, str]) -> BatchSettings:
    """Read the operator's variables; unset or empty means 'keep the archive's value'."""
    return BatchSettings(
        batch_size=int_env(env, ENV_BATCH_SIZE, 1, 1024),
        max_batch_delay_ms=int_env(env, ENV_MAX_BATCH_DELAY_MS, 0, 60_000),
    )


def workers_asked(env: Mapping[str, str]) -> int | None:
    """The model processes the operator asks for (``model.workers``), None when it does not say: TorchServe then
    keeps the archive's workers, esteira-kserve's supervisor its default (:mod:`model_handlers.workers`)."""
    return int_env(env, ENV_WORKERS, 1, MAX_WORKERS)


def idle_poll_from_env(env: Mapping[str, str]) -> float:
    """esteira-kserve's longest poll after a lone request, in seconds (0: none); ValueError names a bad value."""
    return (int_env(env, ENV_IDLE_POLL_US, 0, MAX_IDLE_POLL_US) or 0) / 1e6


def apply_snapshot(text: str, settings: BatchSettings, workers: int | None = None) -> str:
    """``config.properties`` text with every model version in ``model_snapshot`` given ``settings`` and, unless
    None, ``workers`` (TorchServe starts ``minWorkers``; ``maxWorkers`` is as many, the most its scale API may ask)."""
    if settings.empty and workers is None:
        return text
    raw = parse_properties(text).get("model_snapshot")
    if not raw:
        raise ValueError(
            "config.properties has no model_snapshot to apply batching or workers to (esteira package writes one)"
        )
    snapshot = json.loads(raw)
    models = snapshot.get("models")
    if not isinstance(models, dict) or not models:
        raise ValueError("model_snapshot lists no models")
    for versions in models.values():
        for entry in versions.values():
            if settings.batch_size is not None:
                entry["batchSize"] = settings.batch_size
            if settings.max_batch_delay_ms is not None:
                entry["maxBatchDelay"] = settings.max_batch_delay_ms
            if workers is not None:
                entry["minWorkers"] = entry["maxWorkers"] = workers
    return set_properties(text, {"model_snapshot": dump_snapshot(snapshot)})


def worker_threads(text: str, env: Mapping[str, str]) -> dict[str, str]:
    """``ESTEIRA_TORCH_THREADS`` for TorchServe's Python workers where ``config.properties`` starts several: each
    worker's share of the CPUs, less one for the frontend (:func:`esteira.packaging.cpus.threads_per_process`), so
    N workers do not each take every CPU but one. Nothing when one worker runs or the variable is set already."""
    if env.get(ENV_TORCH_THREADS, "").strip():
        return {}
    workers = sum(int(entry.get("minWorkers", 1)) for entry in snapshot_entries(text))
    return {ENV_TORCH_THREADS: str(threads_per_process(env, workers))} if workers > 1 else {}


def batches_and_workers(text: str) -> list[tuple[int, int]]:
    """Each model version's batch size and workers in ``config.properties``, as TorchServe starts them."""
    return [(int(entry.get("batchSize", 1)), int(entry.get("minWorkers", 1))) for entry in snapshot_entries(text)]


def joined_config(text: str, delay_ms: int | None = None) -> tuple[str, Joining | None]:
    """How requests are joined before TorchServe for the one model ``config.properties`` serves batched
    (:mod:`esteira.packaging.joiner`), waiting ``delay_ms`` for company where the ModelDeployment's
    ``batching.maxBatchDelayMs`` asks (the archive's own delay is not waited on), and the config TorchServe then
    runs: the model unbatched, so that TorchServe holds no request for company, and its answers allowed as many
    times ``max_response_size`` as a joined request carries answers. ``text`` as it is, and None, where it serves
    several models or one unbatched."""
    from esteira.packaging.joiner import Joining  # httptools: not for the health check

    properties = parse_properties(text)
    entries = batches_and_workers(text)
    max_body = int(properties.get("max_request_size") or MAX_MESSAGE_BYTES)
    joining = Joining.for_model(*entries[0], max_body, delay_ms) if len(entries) == 1 else None
    if joining is None:
        return text, None
    max_response = int(properties.get("max_response_size") or MAX_MESSAGE_BYTES)
    text = apply_snapshot(text, BatchSettings(batch_size=1))
    return set_properties(text, {"max_response_size": str(joining.most * max_response)}), joining


def snapshot_entries(text: str) -> list[dict[str, Any]]:
    """Each model version's entry in ``config.properties``' ``model_snapshot`` (none without one)."""
    raw = parse_properties(text).get("model_snapshot")
    models = (json.loads(raw).get("models") or {}) if raw else {}
    return [entry for versions in models.values() for entry in versions.values()]


def relocate(text: str, model_dir: str, packaged_dir: str = DEFAULT_MODEL_DIR) -> str:
    """Point file paths written for ``packaged_dir`` at ``model_dir`` (a model mounted elsewhere, a local run)."""
    old, new = packaged_dir.rstrip("/"), model_dir.rstrip("/")
    if old == new:
        return text
    props = parse_properties(text)
    updates = {
        key: new + props[key][len(old) :]
        for key in _PATH_KEYS
        if key in props and (props[key] == old or props[key].startswith(old + "/"))
    }
    return set_properties(text, updates) if updates else text


def runtime_config(
    text: str, settings: BatchSettings, model_dir: str = DEFAULT_MODEL_DIR, workers: int | None = None
) -> str:
    """The configuration TorchServe starts from in Esteira's runtime."""
    text = apply_snapshot(text, settings, workers)
    text = relocate(text, model_dir)
    return set_properties(text, {"enable_envvars_config": "true"})


def torchserve_command(
    config_path: str, model_store: str, extra: Sequence[str] = (), log_config: str | None = None
) -> list[str]:
    """TorchServe in the foreground, without config snapshots (the runtime copy is already the truth)."""
    logging = [f"--log-config={log_config}"] if log_config else []
    return [
        "torchserve",
        "--foreground",
        "--ncs",
        f"--ts-config={config_path}",
        f"--model-store={model_store}",
        *logging,
        *extra,
    ]


def log_config_file(model_dir: Path, runtime_dir: Path) -> Path:
    """The model folder's ``config/log4j2.xml`` (``esteira package`` writes one), else Esteira's default
    (``esteira.packaging.logs``) in the runtime directory: TorchServe's own logs every request several times."""
    packaged = model_dir / LOG_CONFIG_PATH
    return packaged if packaged.is_file() else runtime_dir / Path(LOG_CONFIG_PATH).name


def write_log_config(path: Path, model_dir: Path) -> None:
    """Write Esteira's default at `path` unless it is the model folder's own file."""
    if path != model_dir / LOG_CONFIG_PATH:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(log4j2_xml())


@dataclass(frozen=True)
class Addresses:
    """Where the front listens (TorchServe's configured inference and metrics addresses), where TorchServe's
    move to, and its management API (the front asks it whether the model is ready)."""

    public: str
    backend: str
    management: str
    metrics: str
    backend_metrics: str


def addresses(properties: Mapping[str, str], env: Mapping[str, str]) -> Addresses:
    """``TS_*`` variables win over the file, as TorchServe applies them (the runtime config turns that on)."""
    public = env.get("TS_INFERENCE_ADDRESS") or properties.get("inference_address") or DEFAULT_INFERENCE_ADDRESS
    management = env.get("TS_MANAGEMENT_ADDRESS") or properties.get("management_address") or DEFAULT_MANAGEMENT_ADDRESS
    metrics = env.get("TS_METRICS_ADDRESS") or properties.get("metrics_address") or DEFAULT_METRICS_ADDRESS
    backend = env.get(ENV_BACKEND_ADDRESS) or DEFAULT_BACKEND_ADDRESS
    backend_metrics = env.get(ENV_BACKEND_METRICS_ADDRESS) or DEFAULT_BACKEND_METRICS_ADDRESS
    public_ones = {"inference": public.rstrip("/"), "metrics": metrics.rstrip("/")}
    for variable, moved in ((ENV_BACKEND_ADDRESS, backend), (ENV_BACKEND_METRICS_ADDRESS, backend_metrics)):
        for what, address in public_ones.items():
            if moved.rstrip("/") == address:
                raise ValueError(f"{variable}={moved} is the {what} address clients use; pick another port")
    return Addresses(
        public.rstrip("/"),
        backend.rstrip("/"),
        management.rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:"),
        metrics.rstrip("/"),
        backend_metrics.rstrip("/"),
    )


def runtime_environment(env: Mapping[str, str], runtime_dir: Path) -> dict[str, str]:
    """Logs and temporary files go under the writable runtime directory. TEMP is the JVM's temporary
    directory (unpacked archives, worker sockets) and TMPDIR the launcher's (its pid file, which
    ``supervise`` reads), so both are set, whatever the environment said."""
    out = dict(env)
    out.setdefault("LOG_LOCATION", str(runtime_dir / "logs"))
    out.setdefault("METRICS_LOCATION", str(runtime_dir / "logs"))
    out.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    out["TEMP"] = out["TMPDIR"] = str(runtime_dir / "tmp")
    return out


# --- running ------------------------------------------------------------------------------------


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap() -> None:
    """Collect exited children, including orphans handed to PID 1."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def frontend_pid(pid_file: Path, group: int) -> int | None:
    """The Java frontend's pid from the launcher's pid file, if that process is in ``group``."""
    try:
        pid = int(pid_file.read_text().split()[0])
        return pid if os.getpgid(pid) == group else None
    except (OSError, ValueError, IndexError):
        return None


def supervise(
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    pid_file: Path | None = None,
    flush_dir: Path | None = None,
    asked_to_stop: Sequence[int] = (),
) -> int:
    """Run ``command`` in its own process group and return once every process in the group has exited.

    A termination signal goes to the Java frontend (found through the launcher's ``pid_file``), whose shutdown
    stops the Python workers in order; signalling the whole group would kill the workers first, and the
    frontend would start new ones while shutting down. Without a pid file the whole group is signalled.
    Before the first one, workers listening in ``flush_dir`` post their queued inference records (the frontend
    kills them with SIGKILL; :mod:`esteira.packaging.log_flush`). A signal before the start (``asked_to_stop``,
    what :func:`hold_stop_signals` kept) starts nothing; one while the command starts is passed on once it has.
    An exit nobody asked for is a failure, whatever the launcher's status or a later signal says, and what the
    group left running is stopped (a worker left behind kept a pod that serves nothing alive).
    """
    if asked_to_stop:
        return 0
    if flush_dir is not None:  # markers of a run before a container restart name pids this group may reuse
        clear_markers(flush_dir)
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if child is None:  # still starting: passed on once it has
            early.append(signum)
            return
        if not stopping and flush_dir is not None:
            stopping = True  # a second signal during the flush goes straight on to the frontend
            asked, flushed = flush_workers(flush_dir, child.pid)
            if asked:
                print(
                    f"esteira model server: {flushed} of {asked} workers posted their queued inference records",
                    flush=True,
                )
        stopping = True
        target = frontend_pid(pid_file, child.pid) if pid_file else None
        with contextlib.suppress(ProcessLookupError):
            if target is not None:
                os.kill(target, signum)
            else:
                os.killpg(child.pid, signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    child = subprocess.Popen(list(command), env=dict(env), cwd=cwd, start_new_session=True)
    if early:
        forward(early[0], None)
    code = child.wait()
    failed = not stopping  # decided now: a signal while what is left stops must not make it a success
    if failed:
        _stop_group(child.pid)
    while _group_alive(child.pid):
        _reap()
        time.sleep(0.2)
    _reap()
    return (code or 1) if failed else 0


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LEFT_BEHIND_SECONDS = 10.0  # how long what an unasked exit left running gets after SIGTERM, before SIGKILL


def hold_stop_signals() -> list[int]:
    """From the entrypoint's first line: a stop signal kept until :func:`supervise` starts (as PID 1 a SIGTERM with
    the default disposition is ignored, and TorchServe started anyway and ran until the grace period's SIGKILL)."""
    held: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    return held


def _stop_group(group: int) -> None:
    """SIGTERM what is left of ``group``, then SIGKILL what is still there after ``LEFT_BEHIND_SECONDS``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + LEFT_BEHIND_SECONDS
    while _group_alive(group) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m esteira.packaging.entrypoint",
        description="Apply Esteira's batching to the model snapshot and run TorchServe in the foreground.",
    )
    parser.add_argument(
        "--model-dir",
        default=os.environ.get(ENV_MODEL_DIR, DEFAULT_MODEL_DIR),
        help=f"Where KServe put the model (config/ and model-store/). Default: ${ENV_MODEL_DIR} or {DEFAULT_MODEL_DIR}.",
    )
    parser.add_argument(
        "--runtime-dir",
        default=os.environ.get(ENV_RUNTIME_DIR, DEFAULT_RUNTIME_DIR),
        help=f"Writable directory for the adjusted config, logs and temporary files. Default: {DEFAULT_RUNTIME_DIR}.",
    )
    parser.add_argument("--dry-run", action="store_true", help="Print the adjusted config and the command only.")
    parser.add_argument("torchserve_args", nargs="*", help="Extra TorchServe arguments (after --).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    asked_to_stop = [] if args.dry_run else hold_stop_signals()
    model_dir = args.model_dir.rstrip("/") or "/"
    runtime_dir = Path(args.runtime_dir)
    source = Path(model_dir) / CONFIG_PATH
    try:
        settings, workers = batch_settings_from_env(os.environ), workers_asked(os.environ)
        text = runtime_config(source.read_text(), settings, model_dir, workers)
    except (OSError, ValueError) as exc:
        print(f"esteira model server: {source}: {exc}", file=sys.stderr)
        return 2
    config_path = runtime_dir / RUNTIME_CONFIG
    log_config = log_config_file(Path(model_dir), runtime_dir)
    command = torchserve_command(
        str(config_path), f"{model_dir}/{MODEL_STORE}", args.torchserve_args, log_config=str(log_config)
    )
    # Imported here: the health check imports this module every few seconds and needs neither httptools nor pydantic.
    from esteira.packaging import admission, front, surface

    limit = admission.at_once(batches_and_workers(text))
    text, joining = joined_config(text, settings.max_batch_delay_ms)
    properties = parse_properties(text)
    max_body = int(properties.get("max_request_size") or MAX_MESSAGE_BYTES)
    try:
        where = addresses(properties, os.environ)
    except ValueError as exc:
        print(f"esteira model server: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(text)
        if joining is not None:
            waits = f", waiting up to {joining.linger * 1e3:g} ms for company" if joining.linger else ""
            print(
                f"# the front joins up to {joining.most} requests in one, {joining.at_once} at TorchServe at once{waits}"
            )
        print(f"# front on {where.public}, TorchServe inference on {where.backend}")
        print(f"# front's metrics on {where.metrics}, TorchServe's on {where.backend_metrics}")
        print("# " + " ".join(command))
        return 0
    flush_dir = runtime_dir / LOG_FLUSH_DIR
    env = (
        runtime_environment(os.environ, runtime_dir)
        | worker_threads(text, os.environ)
        | {
            "TS_INFERENCE_ADDRESS": where.backend,
            "TS_METRICS_ADDRESS": where.backend_metrics,
            ENV_LOG_FLUSH_DIR: str(flush_dir),
        }
        | ({} if joining is None else {ENV_JOINED_REQUESTS: str(joining.most)})
    )
    for folder in (runtime_dir, Path(env["LOG_LOCATION"]), Path(env["METRICS_LOCATION"]), Path(env["TEMP"])):
        folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(text)
    write_log_config(log_config, Path(model_dir))
    try:
        served = surface.served_model(Path(model_dir))
        host, port = front.parse_address(where.public)
        metrics_at = front.parse_address(where.metrics)
    except (OSError, ValueError) as exc:
        print(f"esteira model server: {exc}", file=sys.stderr)
        return 2
    model = front.TorchServeSurface(
        served,
        env.get(ENV_MODEL_VERSION) or served.version,
        where.backend,
        where.management,
        where.backend_metrics,
        admission=None if limit is None else admission.Admission(limit),
        joining=joining,
    )
    listener = front.FrontThread(model, host, port, max_body=max_body, metrics=metrics_at).start()
    freeze_startup_heap()  # every inference request crosses the front: its collections must not pause them
    try:
        # TorchServe's launcher writes the frontend's pid to its temporary directory (TMPDIR, set above).
        return supervise(command, env, runtime_dir, Path(env["TMPDIR"]) / PID_FILE, flush_dir, asked_to_stop)
    finally:
        listener.stop()


if __name__ == "__main__":
    raise SystemExit(main())
