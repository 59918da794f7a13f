"""Which model server `esteira up` starts for a spec, with what Python and batching, the precise error when
the esteira-kserve runtime is not on this machine (before anything starts), and that stopping leaves no
server behind. No model server runs here."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.local import kserve_server
from esteira.local.cli import main
from esteira.local.kserve_server import KServeServer, RuntimeUnavailable, find_kserve_python
from esteira.local.model_server import free_port
from esteira.local.runtime import LocalRuntime
from esteira.local.server import Ports, TorchServeServer, local_config
from esteira.packaging.config import parse_properties
from esteira.vocabulary import (
    ENV_BATCH_SIZE,
    ENV_IDLE_POLL_US,
    ENV_JOINED_REQUESTS,
    ENV_KSERVE_PYTHON,
    ENV_MAX_BATCH_DELAY_MS,
    ENV_TORCH_THREADS,
    ENV_WORKERS,
)
from tests.local.conftest import KSERVE_PYTHON
from tests.support.prerequisites import require_file
from tests.support.stand_ins import StandInServer

ARCHIVE_BATCHING = {"batchSize": 8, "maxBatchDelay": 10}
SNAPSHOT = {"name": "startup.cfg", "models": {"iris": {"1.0.0": {"marName": "iris.mar", **ARCHIVE_BATCHING}}}}


def packaged_folder(root: Path) -> Path:
    """The smallest folder a local manifest accepts: a config.properties whose snapshot serves iris."""
    folder = root / "iris"
    (folder / "config").mkdir(parents=True)
    properties = f"model_store=/mnt/models/model-store\nmodel_snapshot={json.dumps(SNAPSHOT)}\n"
    (folder / "config" / "config.properties").write_text(properties)
    return folder


def write_md(path: Path, folder: Path, runtime: str | None, extra: str = "") -> Path:
    runtime_field = f", runtime: {runtime}" if runtime else ""
    path.write_text(
        "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\nspec:\n"
        f'  model: {{name: iris, version: "1.0.0", storageUri: "{folder}"{runtime_field}}}\n{extra}'
    )
    return path


def spec_with(batching: dict[str, int] | None = None) -> ModelDeploymentSpec:
    body: dict[str, object] = {"model": {"name": "iris", "version": "1.0.0", "storageUri": "file:///m"}}
    if batching is not None:
        body["batching"] = batching
    return ModelDeploymentSpec.parse(body)


@pytest.fixture
def no_repository_runtime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine where `make kserve-runtime` never ran and nothing names a Python."""
    monkeypatch.setattr(kserve_server, "REPOSITORY_PYTHON", tmp_path / "absent" / "python")
    monkeypatch.delenv(ENV_KSERVE_PYTHON, raising=False)


@pytest.mark.usefixtures("no_repository_runtime")
def test_no_runtime_anywhere_says_how_to_get_one() -> None:
    with pytest.raises(RuntimeUnavailable) as caught:
        find_kserve_python()
    message = str(caught.value)
    assert "spec.model.runtime esteira-kserve" in message
    assert "make kserve-runtime" in message and "--kserve-python" in message and ENV_KSERVE_PYTHON in message


def test_a_named_python_that_is_not_a_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match=r"--kserve-python names .*nowhere/python, which is not an executable"):
        find_kserve_python(tmp_path / "nowhere" / "python")


def test_a_python_without_kserve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KSERVE_PYTHON, sys.executable)  # the project's own environment: no kserve
    with pytest.raises(RuntimeUnavailable, match=rf"\({ENV_KSERVE_PYTHON}\) cannot import kserve;"):
        find_kserve_python()


def test_the_option_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require_file(KSERVE_PYTHON, "run `make kserve-runtime`")
    monkeypatch.setenv(ENV_KSERVE_PYTHON, str(tmp_path / "wrong"))
    assert find_kserve_python(KSERVE_PYTHON) == KSERVE_PYTHON


def test_the_repository_runtime_is_found_unnamed(monkeypatch: pytest.MonkeyPatch) -> None:
    require_file(KSERVE_PYTHON, "run `make kserve-runtime`")
    monkeypatch.delenv(ENV_KSERVE_PYTHON, raising=False)
    assert find_kserve_python() == KSERVE_PYTHON


@pytest.mark.usefixtures("no_repository_runtime")
def test_esteira_up_without_the_runtime_fails_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_md(tmp_path / "md.yaml", packaged_folder(tmp_path), "esteira-kserve")
    workdir = tmp_path / "run"
    assert main(["up", "-f", str(manifest), "--port", "1", "--workdir", str(workdir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("esteira up: spec.model.runtime esteira-kserve needs KServe's model server")
    assert "make kserve-runtime" in error
    assert not workdir.exists()


@pytest.mark.usefixtures("no_repository_runtime")
def test_switching_the_file_to_a_missing_runtime_keeps_the_running_spec(tmp_path: Path) -> None:
    folder = packaged_folder(tmp_path)
    manifest = write_md(tmp_path / "md.yaml", folder, None)
    events: list[str] = []
    runtime = LocalRuntime(manifest, port=1, workdir=tmp_path / "run", log=events.append)
    before = runtime.spec
    write_md(manifest, folder, "esteira-kserve", "  batching: {maxBatchSize: 4}\n")
    runtime._reload()
    assert runtime.spec == before
    assert any("RuntimeUnavailable" in line and "make kserve-runtime" in line for line in events), events


def test_each_revision_gets_the_runtime_its_spec_names(tmp_path: Path) -> None:
    require_file(KSERVE_PYTHON, "run `make kserve-runtime`")
    folder = packaged_folder(tmp_path)
    manifest = write_md(tmp_path / "md.yaml", folder, "esteira-kserve")
    runtime = LocalRuntime(manifest, port=1, workdir=tmp_path / "run", log=lambda _: None, kserve_python=KSERVE_PYTHON)
    server = runtime._new_server(1, "1.0.0", folder.as_uri())
    assert isinstance(server, KServeServer) and server.python == KSERVE_PYTHON
    write_md(manifest, folder, None)
    runtime._reload()
    assert isinstance(runtime._new_server(2, "1.0.0", folder.as_uri()), TorchServeServer)


def test_esteira_kserve_gets_only_the_batching_the_spec_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BATCH_SIZE, "1")  # a leftover in the user's shell must not override the archive
    server = KServeServer(1, "iris", "1.0.0", tmp_path, tmp_path / "run", spec_with(), python=Path(sys.executable))
    env = server.environment()
    assert ENV_BATCH_SIZE not in env and ENV_MAX_BATCH_DELAY_MS not in env
    assert env["ESTEIRA_REVISION"] == "1" and env["ESTEIRA_MODEL_VERSION"] == "1.0.0"
    server.spec = spec_with({"maxBatchSize": 4})
    assert server.environment()[ENV_BATCH_SIZE] == "4" and ENV_MAX_BATCH_DELAY_MS not in server.environment()


@pytest.mark.parametrize(("variable", "value"), [(ENV_IDLE_POLL_US, "200"), (ENV_WORKERS, "2")])
def test_esteira_kserve_takes_its_idle_poll_and_workers_from_the_users_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)  # not the spec's to decide: the README tells users to set them here
    server = KServeServer(1, "iris", "1.0.0", tmp_path, tmp_path / "run", spec_with(), python=Path(sys.executable))
    assert server.environment()[variable] == value


def test_the_specs_workers_win_over_the_users_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_WORKERS, "2")
    source = {"name": "iris", "version": "1.0.0", "storageUri": "file:///m", "runtime": "esteira-kserve"}
    spec = ModelDeploymentSpec.parse({"model": {**source, "workers": 3}})
    server = KServeServer(1, "iris", "1.0.0", tmp_path, tmp_path / "run", spec, python=Path(sys.executable))
    assert server.environment()[ENV_WORKERS] == "3"
    server.spec = ModelDeploymentSpec.parse({"model": source})
    assert server.environment()[ENV_WORKERS] == "2", "the spec leaves it to the shell"


@pytest.mark.parametrize(("workers", "expected"), [(1, None), (2, "1")])
def test_torchserve_workers_share_the_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, expected: str | None
) -> None:
    """An archive packaged with several workers: each worker's torch gets its share of the CPUs (4 here: two
    workers, 2 each, less one for the frontend), not every CPU but one."""
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv(ENV_TORCH_THREADS, raising=False)
    folder = packaged_folder(tmp_path)
    config = folder / "config" / "config.properties"
    snapshot = json.loads(json.dumps(SNAPSHOT))
    snapshot["models"]["iris"]["1.0.0"] |= {"minWorkers": workers, "maxWorkers": workers}
    config.write_text(f"model_snapshot={json.dumps(snapshot)}\n")
    server = TorchServeServer(1, "iris", "1.0.0", folder, tmp_path / "run", spec_with())
    server.root.mkdir(parents=True)
    server.prepare()
    assert server.environment().get(ENV_TORCH_THREADS) == expected


def test_esteira_kserve_listens_on_loopback_only(tmp_path: Path) -> None:
    server = KServeServer(1, "iris", "1.0.0", tmp_path, tmp_path / "run", spec_with(), python=Path(sys.executable))
    command = server.prepare()
    assert command[:3] == [sys.executable, "-m", "model_handlers.kserve_server"]
    assert "--host=127.0.0.1" in command and f"--http-port={server.port}" in command
    assert server.metrics_url == f"http://127.0.0.1:{server.port}/metrics"


def test_the_router_reaches_esteira_kserve_on_its_unix_socket_once_ready(tmp_path: Path) -> None:
    server = KServeServer(1, "iris", "1.0.0", tmp_path, tmp_path / "run", spec_with(), python=Path(sys.executable))
    command = server.prepare()
    socket_path = tmp_path / "run" / "http.sock"
    assert f"--unix-socket={socket_path}" in command
    assert server.url is None  # not ready yet
    server.ready = True
    assert server.url == f"unix:{socket_path}"


def test_a_revision_folder_too_deep_for_a_socket_keeps_the_router_on_the_port(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / "run"
    server = KServeServer(1, "iris", "1.0.0", tmp_path, deep, spec_with(), python=Path(sys.executable))
    command = server.prepare()
    assert not any(part.startswith("--unix-socket") for part in command)
    server.ready = True
    assert server.url == f"http://127.0.0.1:{server.port}"


IRIS_CONFIG = {"kind": "tabular", "labels": ["a", "b", "c"], "feature_names": ["w", "x", "y", "z"]}


@pytest.mark.parametrize(
    ("spec", "shell_workers", "expected"),
    [
        ({}, None, (8, 16, 6_553_500)),  # the archive's batches, one worker, the config's default body limit
        ({"batching": {"maxBatchSize": 4}, "model": {"workers": 3}}, "5", (4, 24, 1000)),  # the spec's
        ({}, "2", (8, 32, 1000)),  # workers from the user's shell where the spec leaves them
        ({"batching": {"maxBatchSize": 1}}, None, None),  # unbatched: requests go one by one
    ],
)
def test_the_router_joins_requests_to_esteira_kserve_beyond_two_batches_a_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec: dict[str, dict[str, object]],
    shell_workers: str | None,
    expected: tuple[int, int, int] | None,
) -> None:
    if shell_workers is None:
        monkeypatch.delenv(ENV_WORKERS, raising=False)
    else:
        monkeypatch.setenv(ENV_WORKERS, shell_workers)
    folder = packaged_folder(tmp_path)
    limit = {} if expected is None or expected[2] != 1000 else {"max_body_bytes": 1000}
    (folder / "model-store" / "iris.mar").mkdir(parents=True)  # an unpacked archive
    (folder / "model-store" / "iris.mar" / "esteira-model.json").write_text(json.dumps(IRIS_CONFIG | limit))
    source = {"name": "iris", "version": "1.0.0", "storageUri": "file:///m", "runtime": "esteira-kserve"}
    parsed = ModelDeploymentSpec.parse({**spec, "model": source | spec.get("model", {})})
    server = KServeServer(1, "iris", "1.0.0", folder, tmp_path / "run", parsed, python=Path(sys.executable))
    server.prepare()
    joining = server.joining
    assert (None if joining is None else (joining.most, joining.at_once, joining.max_body)) == expected
    assert joining is None or not joining.for_callers  # its batcher batches what queued: nobody waits for callers
    # while callers give up, the router holds what is past two batches, newest first, as before TorchServe
    assert server.at_once == (None if joining is None else joining.at_once)


def test_no_request_is_joined_for_esteira_kserve_on_its_port(tmp_path: Path) -> None:
    """esteira-kserve reads joined requests on its Unix socket only: a folder too deep for one keeps them apart."""
    folder = packaged_folder(tmp_path)
    (folder / "model-store" / "iris.mar").mkdir(parents=True)
    (folder / "model-store" / "iris.mar" / "esteira-model.json").write_text(json.dumps(IRIS_CONFIG))
    deep = KServeServer(1, "iris", "1.0.0", folder, tmp_path / ("d" * 100), spec_with(), python=Path(sys.executable))
    shallow = KServeServer(1, "iris", "1.0.0", folder, tmp_path / "run", spec_with(), python=Path(sys.executable))
    deep.prepare()
    shallow.prepare()
    assert deep.joining is None and shallow.joining is not None


@pytest.mark.parametrize(
    ("batching", "expected"),
    [
        (None, ARCHIVE_BATCHING),
        ({"maxBatchSize": 1}, {"batchSize": 1, "maxBatchDelay": 10}),
        ({"maxBatchSize": 16, "maxBatchDelayMs": 3}, {"batchSize": 16, "maxBatchDelay": 3}),
    ],
)
def test_torchserve_keeps_the_archive_batching_the_spec_leaves_out(
    tmp_path: Path, batching: dict[str, int] | None, expected: dict[str, int]
) -> None:
    source = (packaged_folder(tmp_path) / "config" / "config.properties").read_text()
    config = local_config(source, spec_with(batching), tmp_path, Ports(1, 2, 3, 4, 5))
    entry = json.loads(parse_properties(config)["model_snapshot"])["models"]["iris"]["1.0.0"]
    assert {key: entry[key] for key in expected} == expected


@pytest.mark.parametrize(("batching", "linger"), [(None, 0.0), ({"maxBatchDelayMs": 4}, 0.004)])
def test_the_router_waits_for_company_only_as_long_as_the_spec_asks(
    tmp_path: Path, batching: dict[str, int] | None, linger: float
) -> None:
    """The archive's own delay (10 ms here) is not waited on; the spec's ``batching.maxBatchDelayMs`` is."""
    folder = packaged_folder(tmp_path)
    spec = ModelDeploymentSpec.parse(
        {"model": {"name": "iris", "version": "1.0.0", "storageUri": "file:///m"}}
        | ({"batching": batching} if batching else {})
    )
    server = TorchServeServer(1, "iris", "1.0.0", folder, tmp_path / "run", spec)
    server.root.mkdir(parents=True)
    server.prepare()
    assert server.joining is not None and server.joining.linger == linger


@pytest.mark.parametrize(("workers", "expected"), [(None, 1), (3, 3)])
def test_torchserve_takes_the_specs_workers_over_the_archives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int | None, expected: int
) -> None:
    """``model.workers`` replaces the archive's workers (1 here) as the pod's entrypoint does, and the workers share
    the CPUs (9 here: 3 each, less one for serving)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "9")
    monkeypatch.delenv(ENV_TORCH_THREADS, raising=False)
    folder = packaged_folder(tmp_path)
    config = folder / "config" / "config.properties"
    snapshot = json.loads(json.dumps(SNAPSHOT))
    snapshot["models"]["iris"]["1.0.0"] |= {"minWorkers": 1, "maxWorkers": 1}
    config.write_text(f"model_snapshot={json.dumps(snapshot)}\n")
    source = {"name": "iris", "version": "1.0.0", "storageUri": "file:///m", "runtime": "esteira-torchserve"}
    spec = ModelDeploymentSpec.parse({"model": source if workers is None else {**source, "workers": workers}})
    server = TorchServeServer(1, "iris", "1.0.0", folder, tmp_path / "run", spec)
    server.root.mkdir(parents=True)
    server.prepare()
    served = json.loads(parse_properties((server.root / "config.properties").read_text())["model_snapshot"])
    entry = served["models"]["iris"]["1.0.0"]
    assert (entry["minWorkers"], entry["maxWorkers"]) == (expected, expected)
    assert server.environment().get(ENV_TORCH_THREADS) == (None if expected == 1 else "2")
    # The archive's batches of 8 are the router's to make, joined, two a worker at once: TorchServe unbatched.
    assert entry["batchSize"] == 1
    assert server.joining is not None and (server.joining.most, server.joining.at_once) == (8, 2 * expected)
    assert server.environment()[ENV_JOINED_REQUESTS] == "8"  # the workers optimize a model for batches of 8
    assert server.at_once == 2 * 8 * expected  # what the router lets through while it holds


@dataclass
class RecordingServer(StandInServer):
    """A model server without a process that records being stopped."""

    runtime: ClassVar[str] = "recording"
    log_name: ClassVar[str] = "recording.log"
    stops: int = 0
    graces: tuple[float, ...] = ()  # what each stop was given
    stopped: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def stop(self, grace: float = 20.0) -> None:
        self.stops += 1
        self.graces = (*self.graces, grace)
        self.stopped.set()


async def test_stopping_the_runtime_stops_a_server_still_draining(tmp_path: Path) -> None:
    """A retired revision whose requests have not finished is stopped with the rest, not left running."""
    manifest = write_md(tmp_path / "md.yaml", packaged_folder(tmp_path), None)
    runtime = LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=lambda _: None)
    draining = RecordingServer(7, "iris", "0.9.0", tmp_path, tmp_path / "run" / "revision-7", runtime.spec)
    runtime.servers[7] = draining
    runtime.router.in_flight[7] = 1  # a request that never finishes keeps the drain waiting
    await runtime._retire_servers()
    assert 7 not in runtime.servers and runtime.retiring == [draining]
    await asyncio.sleep(0.1)  # the drain is under way
    assert draining.stops == 0
    await runtime.stop()
    assert draining.stops == 1 and not runtime.retiring
    assert draining.graces == (30.0,), "without spec.termination, Kubernetes' default grace period"


def retiring_runtime(tmp_path: Path, termination: str) -> tuple[LocalRuntime, RecordingServer]:
    manifest = write_md(tmp_path / "md.yaml", packaged_folder(tmp_path), None, f"  termination: {termination}\n")
    runtime = LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=lambda _: None)
    server = RecordingServer(7, "iris", "0.9.0", tmp_path, tmp_path / "run" / "revision-7", runtime.spec)
    runtime.servers[7] = server
    return runtime, server


async def test_a_retired_server_with_nothing_in_flight_gets_the_whole_grace_period_to_stop(tmp_path: Path) -> None:
    runtime, server = retiring_runtime(tmp_path, "{drainSeconds: 20, gracePeriodSeconds: 45}")
    await runtime._retire_servers()
    await asyncio.wait_for(server.stopped.wait(), 5)
    assert 45.0 - 20.0 < server.graces[0] <= 45.0, "no drainSeconds wait: the router stopped sending at once"
    await runtime.stop()


async def test_requests_in_flight_are_cut_off_at_the_grace_period(tmp_path: Path) -> None:
    """As a pod's grace period bounds its drain and its stop: the server is stopped when the period ends, with
    nothing of it left, however long its requests would still take."""
    runtime, server = retiring_runtime(tmp_path, "{drainSeconds: 0, gracePeriodSeconds: 1}")
    runtime.router.in_flight[7] = 1  # a request that never finishes
    began = time.monotonic()
    await runtime._retire_servers()
    await asyncio.wait_for(server.stopped.wait(), 10)
    assert time.monotonic() - began >= 1.0
    assert server.graces == (0.0,)
    await runtime.stop()


def test_a_prometheus_finds_every_revision_s_series_as_its_pod_serves_them_each_under_its_own_instance(
    tmp_path: Path,
) -> None:
    """`GET /targets` (Prometheus' HTTP service discovery): a TorchServe revision's series on the router, which
    adds what the pod's front counts, an esteira-kserve one's on its own port, a draining server's until it is
    gone; each labelled with the namespace the operator's queries select and an instance of its own (two
    TorchServe revisions share the router's address, and their series without a revision label merged)."""
    folder = packaged_folder(tmp_path)
    manifest = write_md(tmp_path / "md.yaml", folder, None)
    runtime = LocalRuntime(manifest, port=8765, workdir=tmp_path / "run", log=lambda _: None)
    spec = runtime.spec
    first, second = (TorchServeServer(r, "iris", "1.0.0", folder, tmp_path / f"r{r}", spec) for r in (1, 2))
    first.ports = second.ports = Ports.pick()
    third = KServeServer(3, "iris", "1.0.0", folder, tmp_path / "r3", spec, python=Path(sys.executable))
    third.port = 9123
    runtime.servers, runtime.retiring = {2: second, 3: third}, [first]
    targets = runtime.scrape_targets()
    assert [(t["targets"], t["labels"]["__metrics_path__"]) for t in targets] == [
        (["127.0.0.1:8765"], "/servers/1/metrics"),
        (["127.0.0.1:8765"], "/servers/2/metrics"),
        (["127.0.0.1:9123"], "/metrics"),
    ]
    assert {t["labels"]["namespace"] for t in targets} == {runtime.manifest.namespace}
    assert len({t["labels"]["instance"] for t in targets}) == 3
    assert [s["metrics"] for s in runtime.status_view()["servers"].values()] == [
        "http://127.0.0.1:8765/servers/2/metrics",
        "http://127.0.0.1:9123/metrics",
    ]
