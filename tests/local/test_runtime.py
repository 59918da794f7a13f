"""The local runtime end to end, with real model servers: routing, rollouts, restarts, shutdown.

The life of one runtime is one test, run on TorchServe and on esteira-kserve: each phase starts from the
revisions and history the previous one left, and a model server start costs seconds. Tests that are separate
start runtimes of their own, so any worker may run any of them in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from esteira.api.status import CanaryRecord
from esteira.local import kserve_server, server
from esteira.local.cli import serve
from esteira.local.loadgen import LoadGenerator
from esteira.local.router import PortInUse
from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from esteira.packaging.entrypoint import LOG_FLUSH_DIR
from esteira.packaging.processes import group_members
from esteira.rollout.queries import MetricNames, Scope, arm_queries
from tests.local.conftest import (
    MODELS,
    RUNTIMES,
    RuntimeThread,
    http,
    need_runtime,
    need_torchserve,
    wait_for,
    write_manifest,
)
from tests.support.prometheus_server import PrometheusServer

# One worker at a time (with --dist loadgroup): every test here starts model server processes of its own.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local")]


@pytest.fixture(params=RUNTIMES, ids=lambda runtime: runtime or "torchserve")
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeThread]:
    need_runtime(request.param)
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0", mirror=True, runtime=request.param)
    thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=print)).start()
    load = LoadGenerator(thread.runtime.url, "iris", clients=2, batch=8, pause=0.03)
    thread.loop.call_soon_threadsafe(load.start)
    thread.before_stop.append(load.stop)
    thread.load = load
    yield thread
    thread.stop()


@pytest.mark.timeout(900)
def test_one_runtime_from_first_revision_to_shutdown(local: RuntimeThread, tmp_path: Path) -> None:
    """Revision 1 serves; 1.0.1 gets copies, is paused, gated and promoted (2); the worse 1.1.0 is rolled back (3); a
    killed server comes back, and one the router took out though it ran; a rollback to revision 1's build makes revision 4; 1.0.2 is aborted (5), retried
    (6) and promoted by command; shutdown leaves no process. Steady load runs throughout: file edits, pause,
    promotion, rollback, abort, retry, promote and a kill -9 drop no request."""
    serves_v1_v2_and_pins_by_header(local)
    mirroring_pause_and_promotion(local, tmp_path / "prometheus")
    worse_model_rolls_back_on_prediction_shift(local)
    killed_server_is_restarted_and_serves_again(local)
    revision_the_router_took_out_serves_again(local)
    rollback_to_an_earlier_revision(local)
    abort_retry_and_promote_by_command(local)
    load = local.load
    assert load is not None and sum(load.statuses.values()) > 100
    failed = {status: n for status, n in load.statuses.items() if not 200 <= status < 300}
    assert not failed, f"non-2xx answers under load: {failed} of {sum(load.statuses.values())}"
    shutdown_leaves_no_process(local)


def _edit(thread: RuntimeThread, version: str, build: str, **fields: Any) -> None:
    """A new model in the file, served by the runtime the run started with."""
    write_manifest(thread.runtime.path, version, build, runtime=thread.runtime.spec.model.runtime, **fields)


def listening_hosts(port: int) -> set[str]:
    """The addresses something listens on at `port`; an IPv4-mapped IPv6 address (a JVM's) as its IPv4 one."""
    hosts = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # /proc writes each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(packed)
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            hosts.add(str(mapped or ip))
    return hosts


def _outcome(thread: RuntimeThread, revision: int) -> str | None:
    last = thread.runtime.status.last_rollout
    return last.outcome if last is not None and last.revision == revision else None


def serves_v1_v2_and_pins_by_header(local: RuntimeThread) -> None:
    url = local.runtime.url
    status, headers, body = http(f"{url}/v1/models/iris:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert status == 200 and headers["x-model-revision"] == "1"
    assert body["predictions"][0]["label"]
    v2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [6.5, 3.0, 5.5, 2.0]}]}
    status, _, body = http(f"{url}/v2/models/iris/infer", v2, headers={"x-model-revision": "1"})
    assert status == 200 and body["outputs"]
    status, _, body = http(f"{url}/v1/models/iris:predict", {"instances": [[1, 2, 3, 4]]}, {"x-model-revision": "7"})
    assert status == 404 and "revision '7' is not serving" in body["error"]
    assert http(f"{url}/v2/health/ready")[0] == 200
    server = local.runtime.servers[1]
    assert server.runtime == (local.runtime.spec.model.runtime or "TorchServe")
    server_url = server.url
    assert server_url is not None
    if isinstance(server, kserve_server.KServeServer):  # the router reaches it on its socket, the user's alone
        assert server_url == f"unix:{server.root / 'http.sock'}" and server.port is not None
        assert stat.S_IMODE((server.root / "http.sock").stat().st_mode) == 0o600
        port = server.port
    else:
        port = urlparse(server_url).port or 0
    assert listening_hosts(port) == {"127.0.0.1"}


def mirroring_pause_and_promotion(local: RuntimeThread, workdir: Path) -> None:
    """The new canary first gets copies of what stable answers (paused there, the copies go on); once an analysis
    of them passes it takes its first step, and the copies stop (here at a pauseBefore gate, still at 0%)."""
    runtime = local.runtime
    _edit(local, "1.0.1", "iris-1.0.0", mirror=True, pause_before=(50,))
    split = wait_for(lambda: runtime.router.mirror and runtime.router.split, 60, "copies to canary revision 2")
    assert split.canary == 2 and split.weight == 0, split
    paused = local.call(runtime.control("pause", {}))
    assert paused["status"]["phase"] == "Paused"
    prometheus_finds_what_the_analysis_reads_for_each_revision(local, workdir)
    before = runtime.router.arm(2).mirrored
    for _ in range(10):
        status, headers, _ = http(
            f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]}, {"x-model-revision": "1"}
        )
        assert status == 200 and headers["x-model-revision"] == "1"
    wait_for(lambda: runtime.router.arm(2).mirrored >= before + 10, 10, "mirrored copies on the canary")
    local.call(runtime.control("resume", {}))

    def at_the_gate() -> CanaryRecord | None:  # and the router told: the status is written first
        canary = runtime.status.canary
        return (
            canary
            if canary is not None and canary.hold == "WaitingForPromotion" and not runtime.router.mirror
            else None
        )

    gated = wait_for(at_the_gate, 60, "the canary at the 50% gate")
    assert gated.weight == 0 and gated.copies == "Passed", gated
    local.call(runtime.control("promote", {}))
    assert wait_for(lambda: _outcome(local, 2), 60, "revision 2 promoted") == "Promoted"
    assert runtime.status.stable is not None and runtime.status.stable.revision == 2


def prometheus_finds_what_the_analysis_reads_for_each_revision(local: RuntimeThread, workdir: Path) -> None:
    """A Prometheus pointed at the router's `/targets` scrapes both revisions' servers, and the operator's own
    queries for each arm (requests, server errors, the p95 of each request's time in the server) find data, as
    they would in a pod, whichever the runtime. Under TorchServe the router adds what the pod's front counts."""
    runtime = local.runtime
    listed = http(f"{runtime.url}/targets")[2]
    assert [target["labels"]["namespace"] for target in listed] == [runtime.manifest.namespace] * 2, listed
    workdir.mkdir()
    prometheus = PrometheusServer(workdir, [], discovery=f"{runtime.url}/targets").start()
    try:
        for revision in (1, 2):
            queries = arm_queries(MetricNames(), Scope(runtime.manifest.namespace, "iris", "iris"), revision, "1m")
            read = [queries.requests, queries.errors, queries.latency_p95]

            def found(read: list[str] = read) -> list[float] | None:
                values = [prometheus.query(query) for query in read]
                return [float(v[0]["value"][1]) for v in values] if all(values) else None

            requests, errors, p95 = wait_for(found, 60, f"revision {revision}'s requests, errors and p95 in Prometheus")
            assert requests > 0 and errors == 0 and 0 < p95 < 5, (revision, requests, errors, p95)
    finally:
        prometheus.stop()


def worse_model_rolls_back_on_prediction_shift(local: RuntimeThread) -> None:
    runtime = local.runtime
    _edit(local, "1.1.0", "iris-1.1.0", mirror=True)
    assert wait_for(lambda: _outcome(local, 3), 90, "revision 3 judged") == "RolledBack"
    last = runtime.status.last_rollout
    assert last is not None and "prediction-shift-jensenshannon" in last.reason
    assert runtime.phase() == "RolledBack"
    wait_for(lambda: 3 not in runtime.servers, 10, "revision 3 server retired")


def killed_server_is_restarted_and_serves_again(local: RuntimeThread) -> None:
    runtime = local.runtime
    server = runtime.servers[2]
    pgid = server.pgid
    assert pgid is not None
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: server.restarts >= 1, 20, "the crash noticed")
    wait_for(lambda: server.ready and server.pgid != pgid, 90, "revision 2 restarted")
    assert not group_members(pgid)
    crashes = [e.message for e in runtime.timeline if e.reason == "ServerCrashed"]
    assert crashes and f"{server.runtime} was killed by signal SIGKILL" in crashes[-1], crashes
    status, headers, _ = http(f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
    assert status == 200 and headers["x-model-revision"] == "2"


def revision_the_router_took_out_serves_again(local: RuntimeThread) -> None:
    """The router takes a revision out when a request to it goes unanswered (a dropped connection, no answer in
    time); while its server runs and answers its readiness check, the runtime puts it back."""
    runtime = local.runtime
    url = runtime.router.backends[2]
    assert url is not None

    async def take_out() -> None:  # as the router does when a request to it goes unanswered
        runtime.router.set_backend(2, None)

    local.call(take_out())
    wait_for(lambda: runtime.router.backends.get(2) == url, 20, "revision 2 back in the router")
    assert any(event.reason == "ServerReinstated" for event in runtime.timeline)
    status, headers, _ = http(f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
    assert status == 200 and headers["x-model-revision"] == "2"


def rollback_to_an_earlier_revision(local: RuntimeThread) -> None:
    runtime = local.runtime
    result = local.call(runtime.control("rollback", {"revision": 1}))
    assert any(d["reason"] == "RevisionCreated" for d in result["decisions"])
    stable = runtime.status.stable
    assert stable is not None and stable.revision == 4 and stable.model_version == "1.0.0"
    wait_for(lambda: 4 in runtime.servers and runtime.servers[4].ready, 90, "revision 4 ready")
    wait_for(lambda: 2 not in runtime.servers, 10, "revision 2 retired")


def _waiting_for_promotion(thread: RuntimeThread, revision: int) -> bool:
    canary = thread.runtime.status.canary
    server = thread.runtime.servers.get(revision)
    ready = server is not None and server.ready
    return ready and canary is not None and canary.revision == revision and canary.hold == "WaitingForPromotion"


def abort_retry_and_promote_by_command(local: RuntimeThread) -> None:
    """Each command under load: abort a held canary, retry its build as a new revision, promote that one."""
    runtime = local.runtime
    _edit(local, "1.0.2", "iris-1.0.0", pause_before=(50,))
    wait_for(lambda: _waiting_for_promotion(local, 5), 90, "canary revision 5 ready, waiting for promote")
    local.call(runtime.control("abort", {}))
    assert _outcome(local, 5) == "RolledBack"
    last = runtime.status.last_rollout
    assert last is not None and "aborted by request" in last.reason
    wait_for(lambda: 5 not in runtime.servers, 40, "revision 5 retired")
    local.call(runtime.control("retry", {}))
    wait_for(lambda: _waiting_for_promotion(local, 6), 90, "retried build as canary revision 6")
    local.call(runtime.control("promote", {"full": True}))
    stable = runtime.status.stable
    assert stable is not None and stable.revision == 6 and stable.model_version == "1.0.2"
    wait_for(lambda: 4 not in runtime.servers, 40, "revision 4 retired")


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory lies in `folder` (each model server runs in its revision's folder)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        with contextlib.suppress(OSError):
            if Path(os.readlink(cwd)).is_relative_to(folder):
                found.append(int(cwd.parent.name))
    return found


def shutdown_leaves_no_process(local: RuntimeThread) -> None:
    """Not one server process of the whole run, including revisions retired just before (still draining)."""
    groups = [s.pgid for s in local.runtime.servers.values() if s.pgid is not None]
    assert groups
    local.stop()
    assert all(not group_members(g) for g in groups)
    assert not local.runtime.servers and not local.runtime.retiring
    assert not processes_in(local.runtime.workdir)


@contextlib.contextmanager
def _under_load(manifest: Path, tmp_path: Path) -> Iterator[RuntimeThread]:
    """``esteira up`` on ``manifest`` with two clients sending throughout; none of their requests may fail."""
    thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=print)).start()
    load = LoadGenerator(thread.runtime.url, "iris", clients=2, batch=8, pause=0.03)
    thread.loop.call_soon_threadsafe(load.start)
    thread.before_stop.append(load.stop)
    try:
        yield thread
    finally:
        thread.stop()
    failed = {status: n for status, n in load.statuses.items() if not 200 <= status < 300}
    assert sum(load.statuses.values()) > 50 and not failed, load.statuses


def test_a_canary_moves_the_model_to_the_other_runtime(tmp_path: Path) -> None:
    """A new version on esteira-kserve canaries beside stable's TorchServe, is judged on the same evidence and
    promoted; TorchServe's revision then drains and stops. Load throughout drops no request."""
    need_runtime(None)
    need_runtime("esteira-kserve")
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0")
    with _under_load(manifest, tmp_path) as thread:
        runtime = thread.runtime
        torchserve = runtime.servers[1]
        write_manifest(manifest, "1.0.1", "iris-1.0.0", runtime="esteira-kserve")
        wait_for(lambda: runtime.router.split and runtime.router.split.canary == 2, 60, "canary revision 2 serving")
        assert (torchserve.runtime, runtime.servers[2].runtime) == ("TorchServe", "esteira-kserve")
        assert wait_for(lambda: _outcome(thread, 2), 90, "revision 2 judged") == "Promoted"
        judged = [e.message for e in runtime.timeline if e.reason == "AnalysisPassed" and "revision 2" in e.message]
        assert any("prediction-shift" in message for message in judged), judged  # both servers' class counts
        wait_for(lambda: 1 not in runtime.servers, 40, "TorchServe's revision retired")
        status, headers, _ = http(f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
        assert status == 200 and headers["x-model-revision"] == "2"


def test_a_restart_with_the_same_workdir_resumes_the_rollout(tmp_path: Path) -> None:
    """Stopped while a canary waits at a gate, `esteira up` started again on the same file and --workdir serves
    the stable it served, with the canary back where it was (not the file's build as stable, promoted with no
    analysis); the canary's step starts again, and a promote finishes it."""
    need_runtime(None)
    manifest, workdir = tmp_path / "iris.yaml", tmp_path / "run"
    write_manifest(manifest, "1.0.0", "iris-1.0.0")
    first = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=workdir, log=print)).start()
    try:
        write_manifest(manifest, "1.0.1", "iris-1.0.0", pause_before=(50,))
        wait_for(lambda: _waiting_for_promotion(first, 2), 90, "canary revision 2 ready, waiting for promote")
    finally:
        first.stop()
    second = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=workdir, log=print)).start()
    try:
        runtime = second.runtime
        stable, canary = runtime.status.stable, runtime.status.canary
        assert stable is not None and (stable.revision, stable.model_version) == (1, "1.0.0")
        assert canary is not None and (canary.revision, canary.model_version) == (2, "1.0.1")
        resumed = [e.message for e in runtime.timeline if e.reason == "Resumed"]
        assert resumed and "stable revision 1, canary revision 2" in resumed[0], resumed
        status, headers, _ = http(f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
        assert status == 200 and headers["x-model-revision"] == "1"
        wait_for(lambda: _waiting_for_promotion(second, 2), 90, "canary revision 2 ready again, at its gate")
        second.call(runtime.control("promote", {"full": True}))
        stable = runtime.status.stable
        assert stable is not None and stable.revision == 2 and runtime.status.latest_revision == 2
    finally:
        second.stop()


def test_a_canary_that_never_loads_is_rolled_back_at_its_progress_deadline(tmp_path: Path) -> None:
    """A new version whose archive cannot be read never becomes ready: stable keeps every request, and once the
    canary has not been ready for rollout.progressDeadline it is rolled back and its server stopped."""
    need_runtime("esteira-kserve")
    broken = tmp_path / "iris-unreadable"
    shutil.copytree(MODELS / "iris-1.0.0", broken)
    (broken / "model-store" / "iris.mar").write_bytes(b"not a model archive")
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0", runtime="esteira-kserve", progress_deadline="6s")
    with _under_load(manifest, tmp_path) as thread:
        runtime = thread.runtime
        write_manifest(manifest, "1.0.1", broken, runtime="esteira-kserve", progress_deadline="6s")
        wait_for(
            lambda: runtime.status.canary is not None and runtime.status.canary.hold == "WaitingForReadiness",
            60,
            "revision 2 held, not ready",
        )
        assert wait_for(lambda: _outcome(thread, 2), 60, "revision 2 judged") == "RolledBack"
        assert runtime.status.last_rollout is not None
        assert runtime.status.last_rollout.reason == "not ready for 6s (rollout.progressDeadline)"
        assert runtime.status.stable is not None and runtime.status.stable.revision == 1
        wait_for(lambda: 2 not in runtime.servers, 40, "revision 2's server stopped")
        status, headers, _ = http(f"{runtime.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
        assert status == 200 and headers["x-model-revision"] == "1"


def test_port_in_use_names_the_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need_torchserve()
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = LocalRuntime(manifest, port=port, workdir=tmp_path / "run", log=lambda _: None)
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            asyncio.run(runtime.router.start())
        assert asyncio.run(serve(LocalRuntime(manifest, port=port, log=lambda _: None))) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda runtime: runtime or "torchserve")
def test_a_port_taken_before_the_server_binds_it_is_no_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str | None
) -> None:
    """A port is picked free a second or more before the model server binds it, and another process can take it
    in between: the server starts again on fresh ports, and that is not counted as a crash."""
    need_runtime(runtime)
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0", runtime=runtime)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first_pick = iter([int(taken.getsockname()[1])])
        monkeypatch.setattr(kserve_server if runtime else server, "free_port", lambda: next(first_pick, free_port()))
        thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=print)).start()
        try:
            local = thread.runtime
            wait_for(lambda: 1 in local.servers and local.servers[1].ready, 120, "revision 1 ready")
            served = local.servers[1]
            status, headers, _ = http(f"{local.url}/v1/models/iris:predict", {"instances": [[5, 3, 1, 0.2]]})
        finally:
            thread.stop()
    assert status == 200 and headers["x-model-revision"] == "1"
    reasons = [event.reason for event in local.timeline]
    assert reasons.count("PortTaken") == 1 and "ServerCrashed" not in reasons, reasons
    assert reasons.count("ServerReady") == 1, reasons  # the first launch's wait ended with it
    assert served.restarts == 0


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda runtime: runtime or "torchserve")
def test_the_last_inference_records_reach_the_collector_at_shutdown(tmp_path: Path, runtime: str | None) -> None:
    """Stopped at once after its last answer, a model server still holds that answer's records: it posts them
    as it stops (TorchServe's workers when asked, before the frontend kills them), and the built-in collector
    stops only after the servers."""
    need_runtime(runtime)
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0", runtime=runtime, log_mode="request")
    workdir = tmp_path / "run"
    thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=workdir, log=print)).start()
    ids = [f"last-{index}" for index in range(20)]
    try:
        local = thread.runtime
        wait_for(lambda: 1 in local.servers and local.servers[1].ready, 120, "revision 1 ready")
        for request_id in ids:
            body = {"instances": [[5, 3, 1, 0.2]]}
            assert http(f"{local.url}/v1/models/iris:predict", body, {"x-request-id": request_id})[0] == 200
    finally:
        thread.stop()
    with contextlib.closing(sqlite3.connect(workdir / "collector.db")) as database:
        stored = {row[0] for row in database.execute("SELECT request_id FROM records")}
    assert stored == set(ids)
    if runtime is None:  # TorchServe's worker was asked, and said it had flushed
        assert len(list((workdir / "revision-1" / LOG_FLUSH_DIR).glob("*.flushed"))) == 1


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda runtime: runtime or "torchserve")
def test_esteira_up_stops_cleanly_on_sigterm(tmp_path: Path, runtime: str | None) -> None:
    """The command as a person runs it: esteira-kserve's Python is found without being named."""
    need_runtime(runtime)
    manifest = tmp_path / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0", runtime=runtime)
    port = free_port()
    command = [sys.executable, "-m", "esteira.local.cli", "up", "-f", str(manifest), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 120, "esteira up ready")
        servers = http(f"{url}/status")[2]["servers"].values()
        assert [s["runtime"] for s in servers] == [runtime or "TorchServe"]
        for listed in servers:  # where each model server's own series are scraped
            with urllib.request.urlopen(listed["metrics"], timeout=30) as answer:
                assert "# TYPE " in answer.read().decode()
        groups = [s["pgid"] for s in servers]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "every model server has exited" in output
    assert all(not group_members(g) for g in groups)


def _ready(url: str) -> bool:
    try:
        return http(f"{url}/v2/health/ready")[0] == 200
    except OSError:  # not listening yet; wait_for polls again
        return False
