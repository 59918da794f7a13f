"""esteira-kserve in several processes (``ESTEIRA_WORKERS``) in the real server: the workers share the port and
the Unix socket and answer as one server does, a scrape of any of them (or of the metrics port) adds their series up, a SIGTERM
stops every worker after its records are posted, and a worker that dies takes the server down with it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from esteira.packaging.upstream import Upstream
from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from tests.support.cloudevents_sink import RefusingUntilSet, predict_iris, sink
from tests.support.kserve_runtime import KServeRuntimeProcess, refusal_at_start
from tests.support.prerequisites import require_file
from tests.support.torchserve import free_port, process_group_alive
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
WORKERS = {"ESTEIRA_WORKERS": "2"}
OK_REQUESTS = re.compile(r'^esteira_requests_total\{ModelName="iris",Revision="[^"]*",outcome="ok"\} (\S+)$', re.M)
TIMED_REQUESTS = re.compile(
    r'^esteira_server_request_duration_seconds_count\{ModelName="iris",Revision="[^"]*"\} (\S+)$', re.M
)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _answered(metrics_url: str, series: re.Pattern[str] = OK_REQUESTS) -> float:
    with urllib.request.urlopen(metrics_url, timeout=30) as answer:
        found = series.search(answer.read().decode())
    return float(found.group(1)) if found else 0.0


def _answered_by_each_worker(work: Path) -> list[float]:
    """Each worker's own count of answered requests, from the file each worker writes its counters to."""
    counts = []
    for path in sorted(work.glob("metrics-*/counter_*.db")):
        answered = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, *_ = json.loads(key)
            if sample == "esteira_requests_total" and labels.get("outcome") == "ok":
                answered += value
        counts.append(answered)
    return counts


def _predict(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/v1/models/iris:predict",
        data=json.dumps({"instances": [[6.7, 3.0, 5.2, 2.3]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200
        return dict(json.loads(answer.read()))


def _predict_over(socket_path: Path) -> dict[str, object]:
    body = json.dumps({"instances": [[6.7, 3.0, 5.2, 2.3]]}).encode()
    headers = {"Content-Type": "application/json"}
    reply = asyncio.run(Upstream(f"unix:{socket_path}").request("POST", "/v1/models/iris:predict", body, headers))
    assert reply.status == 200, reply.body
    return dict(json.loads(reply.body))


def test_workers_share_the_port_their_metrics_add_up_and_a_sigterm_posts_every_record(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    collector = RefusingUntilSet()
    collector.accepting.set()
    ids = [f"worker-{index}" for index in range(40)]
    metrics_port = free_port()
    with sink(collector) as (url, _):
        env = {**WORKERS, "ESTEIRA_LOG_MODE": "request", "ESTEIRA_LOG_URL": url + COLLECTOR_RECORDS_PATH}
        shared, own = tmp_path / "workers.sock", tmp_path / "alone.sock"
        args = ["--metrics-port", str(metrics_port), "--unix-socket", str(shared)]
        server = KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env=env, args=args)
        server.start()
        try:
            workers = _children(server.pid)
            assert len(workers) == 2, server.log_tail()
            assert "libtorch" not in Path(f"/proc/{server.pid}/maps").read_text()  # the supervisor has no model
            assert all("libtorch" in Path(f"/proc/{pid}/maps").read_text() for pid in workers)
            with KServeRuntimeProcess(IRIS, tmp_path / "alone", "1.0.0", args=["--unix-socket", str(own)]) as alone:
                assert _predict(server.url) == _predict(alone.url)  # one answer, however many processes
                assert _predict_over(shared) == _predict_over(own) == _predict(alone.url)  # and however reached
            assert not own.exists()  # a server removes its socket as it stops
            predict_iris(server.url, ids)  # a connection each: the kernel spreads them over the workers
            for metrics_url in (f"{server.url}/metrics", f"http://127.0.0.1:{metrics_port}/metrics"):
                eventually(lambda u=metrics_url: _answered(u) == len(ids) + 2, 30, f"{metrics_url} counting all")
                assert _answered(metrics_url, TIMED_REQUESTS) == len(ids) + 2  # each timed by the worker it reached
            by_worker = _answered_by_each_worker(tmp_path / "work")
            assert len(by_worker) == 2 and all(count > 0 for count in by_worker), by_worker
        finally:
            server.stop()
        assert server.exit_status() == 0, server.log_tail()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    delivered = collector.delivered_ids()  # both workers posted theirs before exiting
    assert set(ids) <= delivered and len(delivered) == len(ids) + 2  # and the comparisons' requests
    assert not list((tmp_path / "work").glob("metrics-*"))
    assert not shared.exists()


def test_a_worker_that_dies_takes_the_server_down(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    with KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env=WORKERS) as server:
        first, second = sorted(_children(server.pid))
        os.kill(first, signal.SIGKILL)
        eventually(lambda: server.exit_status() is not None, 60, "the supervisor exiting")
        assert server.exit_status() != 0
        eventually(lambda: not Path(f"/proc/{second}").exists(), 30, "the other worker stopping")
        assert "exited with -9: stopping the others" in server.log_tail(200)
        assert not process_group_alive(server.pid)


def test_a_bad_worker_count_stops_esteira_kserve_at_start_naming_the_variable(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    assert "ESTEIRA_WORKERS=0 is outside 1..64" in refusal_at_start(IRIS, tmp_path, {"ESTEIRA_WORKERS": "0"})
