"""The model server's start-up: batching from the operator into the snapshot, paths, and signal handling."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from esteira.packaging import entrypoint
from esteira.packaging.admission import at_once
from esteira.packaging.config import ModelSpec, ServerSpec, config_properties, parse_properties
from esteira.packaging.entrypoint import (
    BatchSettings,
    apply_snapshot,
    batch_settings_from_env,
    batches_and_workers,
    idle_poll_from_env,
    relocate,
    runtime_config,
    supervise,
    torchserve_command,
    worker_threads,
    workers_asked,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGED = config_properties([ModelSpec("iris", "1.0.0", batch_size=1, max_batch_delay_ms=10)])


def entry(text: str, name: str = "iris", version: str = "1.0.0") -> dict[str, object]:
    snapshot = json.loads(parse_properties(text)["model_snapshot"])
    found: dict[str, object] = snapshot["models"][name][version]
    return found


def test_batch_settings_from_env() -> None:
    assert batch_settings_from_env({}) == BatchSettings(None, None)
    assert batch_settings_from_env({"ESTEIRA_BATCH_SIZE": " 16 ", "ESTEIRA_MAX_BATCH_DELAY_MS": "0"}) == BatchSettings(
        16, 0
    )
    assert batch_settings_from_env({"ESTEIRA_BATCH_SIZE": ""}).empty


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ESTEIRA_BATCH_SIZE": "eight"}, "not an integer"),
        ({"ESTEIRA_BATCH_SIZE": "0"}, "outside"),
        ({"ESTEIRA_BATCH_SIZE": "2000"}, "outside"),
        ({"ESTEIRA_MAX_BATCH_DELAY_MS": "-1"}, "outside"),
    ],
)
def test_batch_settings_reject_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_settings_from_env(env)


def test_idle_poll_from_env_in_seconds_off_by_default() -> None:
    assert idle_poll_from_env({}) == 0.0
    assert idle_poll_from_env({"ESTEIRA_IDLE_POLL_US": ""}) == 0.0
    assert idle_poll_from_env({"ESTEIRA_IDLE_POLL_US": "200"}) == pytest.approx(200e-6)


@pytest.mark.parametrize(
    ("raw", "message"), [("lots", "not an integer"), ("-5", "outside"), ("5000", "outside 0..1000")]
)
def test_idle_poll_refuses_bad_values_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"ESTEIRA_IDLE_POLL_US.*{message}"):
        idle_poll_from_env({"ESTEIRA_IDLE_POLL_US": raw})


def test_apply_snapshot_rewrites_snapshot_only() -> None:
    out = apply_snapshot(PACKAGED, BatchSettings(batch_size=16, max_batch_delay_ms=3))
    assert entry(out)["batchSize"] == 16
    assert entry(out)["maxBatchDelay"] == 3
    assert entry(out)["minWorkers"] == entry(PACKAGED)["minWorkers"]
    before, after = parse_properties(PACKAGED), parse_properties(out)
    assert {k: v for k, v in after.items() if k != "model_snapshot"} == {
        k: v for k, v in before.items() if k != "model_snapshot"
    }
    assert out.splitlines()[0] == PACKAGED.splitlines()[0]  # comments kept


def test_apply_snapshot_one_setting_keeps_the_other() -> None:
    out = apply_snapshot(PACKAGED, BatchSettings(batch_size=4))
    assert (entry(out)["batchSize"], entry(out)["maxBatchDelay"]) == (4, 10)


def test_apply_snapshot_every_model_and_version() -> None:
    text = config_properties([ModelSpec("iris", "1.0.0"), ModelSpec("digits", "2.0.0")])
    out = apply_snapshot(text, BatchSettings(batch_size=32))
    assert entry(out, "iris")["batchSize"] == entry(out, "digits", "2.0.0")["batchSize"] == 32


@pytest.mark.parametrize(
    ("workers", "cpus", "expected"),
    [(1, "8", None), (2, "8", "3"), (4, "8", "1"), (3, "2", "1")],  # a share of the CPUs, less one for the frontend
)
def test_several_workers_share_the_cpus(workers: int, cpus: str, expected: str | None) -> None:
    text = config_properties([ModelSpec("iris", "1.0.0", min_workers=workers, max_workers=workers)])
    assert worker_threads(text, {"OMP_NUM_THREADS": cpus}).get("ESTEIRA_TORCH_THREADS") == expected


def test_a_thread_count_set_outright_is_left_alone() -> None:
    text = config_properties([ModelSpec("iris", "1.0.0", min_workers=4, max_workers=4)])
    assert worker_threads(text, {"OMP_NUM_THREADS": "8", "ESTEIRA_TORCH_THREADS": "6"}) == {}
    assert worker_threads("no: snapshot\n", {"OMP_NUM_THREADS": "8"}) == {}


def test_workers_from_the_operator_set_every_version_s_workers_and_split_the_cpus() -> None:
    text = config_properties([ModelSpec("iris", "1.0.0"), ModelSpec("digits", "2.0.0", min_workers=2, max_workers=3)])
    out = apply_snapshot(text, BatchSettings(), workers_asked({"ESTEIRA_WORKERS": "3"}))
    for found in (entry(out), entry(out, "digits", "2.0.0")):
        assert (found["minWorkers"], found["maxWorkers"]) == (3, 3)
    assert entry(out)["batchSize"] == entry(text)["batchSize"]  # batching left as packaged
    assert worker_threads(out, {"OMP_NUM_THREADS": "8"}) == {"ESTEIRA_TORCH_THREADS": "1"}  # 6 workers, 7 CPUs


def test_the_front_lets_two_batches_a_worker_through_as_torchserve_runs_them() -> None:
    """By the batches and workers the runtime config starts, after the operator's settings apply."""
    text = config_properties([ModelSpec("iris", "1.0.0"), ModelSpec("digits", "2.0.0", min_workers=2, max_workers=2)])
    out = apply_snapshot(text, BatchSettings(batch_size=8))
    assert batches_and_workers(out) == [(8, 1), (8, 2)]
    assert at_once(batches_and_workers(out)) == 48
    assert batches_and_workers("no: snapshot\n") == [] and at_once([]) is None


def test_no_workers_from_the_operator_keeps_the_archive_s() -> None:
    assert workers_asked({}) is None
    assert workers_asked({"ESTEIRA_WORKERS": " "}) is None
    assert apply_snapshot(PACKAGED, BatchSettings(), None) == PACKAGED


@pytest.mark.parametrize(("raw", "message"), [("auto", "not an integer"), ("0", "outside 1..64"), ("65", "outside")])
def test_workers_refuse_bad_values_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"ESTEIRA_WORKERS.*{message}"):
        workers_asked({"ESTEIRA_WORKERS": raw})


def test_apply_snapshot_nothing_to_do_is_identity() -> None:
    assert apply_snapshot("anything: at all\n", BatchSettings()) == "anything: at all\n"


def test_apply_snapshot_needs_a_snapshot() -> None:
    with pytest.raises(ValueError, match="model_snapshot"):
        apply_snapshot("load_models=all\n", BatchSettings(batch_size=2))


def test_relocate_moves_paths_under_the_model_dir_only() -> None:
    text = PACKAGED + "metrics_config=/etc/metrics.yaml\n"
    moved = parse_properties(relocate(text, "/data/iris/"))
    assert moved["model_store"] == "/data/iris/model-store"
    assert moved["metrics_config"] == "/etc/metrics.yaml"
    assert relocate(text, "/mnt/models") == text


def test_runtime_config_turns_env_overrides_on() -> None:
    text = config_properties([ModelSpec("iris", "1")]).replace(
        "enable_envvars_config=true", "enable_envvars_config=false"
    )
    out = parse_properties(runtime_config(text, BatchSettings(batch_size=2), "/models"))
    assert out["enable_envvars_config"] == "true"
    assert out["metrics_config"] == "/models/config/metrics.yaml"


def test_torchserve_command() -> None:
    assert torchserve_command("/tmp/x/config.properties", "/mnt/models/model-store", ["--foo"]) == [
        "torchserve",
        "--foreground",
        "--ncs",
        "--ts-config=/tmp/x/config.properties",
        "--model-store=/mnt/models/model-store",
        "--foo",
    ]


def _model_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "models"
    (model_dir / "config").mkdir(parents=True)
    (model_dir / "model-store").mkdir()
    (model_dir / "config" / "config.properties").write_text(
        config_properties([ModelSpec("iris", "1.0.0")], ServerSpec(metrics_config=None))
    )
    return model_dir


def test_main_dry_run_applies_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _model_dir(tmp_path)
    monkeypatch.setenv("ESTEIRA_BATCH_SIZE", "12")
    monkeypatch.setenv("ESTEIRA_MAX_BATCH_DELAY_MS", "7")
    monkeypatch.setenv("ESTEIRA_WORKERS", "2")
    code = entrypoint.main(["--model-dir", str(model_dir), "--runtime-dir", str(tmp_path / "rt"), "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    # Batches of 12 are the front's to make: TorchServe serves the model unbatched, its answers allowed 12 times
    # as large (a joined request's), and the front joins up to 12 requests, two at TorchServe a worker, a request
    # waiting the ModelDeployment's delay for company.
    assert entry(out)["batchSize"] == 1
    assert parse_properties(out)["max_response_size"] == str(12 * 6_553_500)
    joins = "# the front joins up to 12 requests in one, 4 at TorchServe at once, waiting up to 7 ms for company"
    assert joins in out.splitlines()
    assert (entry(out)["minWorkers"], entry(out)["maxWorkers"]) == (2, 2)
    assert parse_properties(out)["model_store"] == f"{model_dir}/model-store"
    assert out.rstrip().splitlines()[-1].startswith("# torchserve --foreground")


def test_the_archives_own_batch_delay_is_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _model_dir(tmp_path)
    monkeypatch.setenv("ESTEIRA_BATCH_SIZE", "8")
    monkeypatch.delenv("ESTEIRA_MAX_BATCH_DELAY_MS", raising=False)
    code = entrypoint.main(["--model-dir", str(model_dir), "--runtime-dir", str(tmp_path / "rt"), "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    assert "# the front joins up to 8 requests in one, 2 at TorchServe at once" in out.splitlines()


def test_a_model_served_unbatched_is_not_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _model_dir(tmp_path)
    monkeypatch.setenv("ESTEIRA_BATCH_SIZE", "1")
    assert entrypoint.main(["--model-dir", str(model_dir), "--runtime-dir", str(tmp_path / "rt"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert entry(out)["batchSize"] == 1 and "max_response_size" not in parse_properties(out)
    assert "joins" not in out
    assert not (tmp_path / "rt").exists()


def test_the_front_takes_the_public_inference_and_metrics_addresses_and_torchserve_moves_to_loopback() -> None:
    properties = {"inference_address": "http://0.0.0.0:8080", "metrics_address": "http://0.0.0.0:8082"}
    where = entrypoint.addresses(properties, {"TS_METRICS_ADDRESS": "http://0.0.0.0:9082/"})
    assert (where.public, where.metrics) == ("http://0.0.0.0:8080", "http://0.0.0.0:9082")
    assert (where.backend, where.backend_metrics) == ("http://127.0.0.1:8079", "http://127.0.0.1:8078")
    assert entrypoint.addresses({}, {}).metrics == "http://127.0.0.1:8082"  # TorchServe's own default


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ESTEIRA_BACKEND_ADDRESS": "http://0.0.0.0:8082"},
            "ESTEIRA_BACKEND_ADDRESS=http://0.0.0.0:8082 is the metrics",
        ),
        (
            {"ESTEIRA_BACKEND_METRICS_ADDRESS": "http://0.0.0.0:8082/"},
            "ESTEIRA_BACKEND_METRICS_ADDRESS=http://0.0.0.0:8082/ is the metrics",
        ),
        ({"ESTEIRA_BACKEND_METRICS_ADDRESS": "http://0.0.0.0:8080"}, "is the inference address clients use"),
    ],
)
def test_torchserve_cannot_move_onto_an_address_the_front_serves(env: dict[str, str], message: str) -> None:
    properties = {"inference_address": "http://0.0.0.0:8080", "metrics_address": "http://0.0.0.0:8082"}
    with pytest.raises(ValueError, match=re.escape(message)):
        entrypoint.addresses(properties, env)


def test_main_fails_fast_on_bad_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = str(_model_dir(tmp_path))
    monkeypatch.setenv("ESTEIRA_BATCH_SIZE", "lots")
    assert entrypoint.main(["--model-dir", model_dir, "--dry-run"]) == 2
    assert "ESTEIRA_BATCH_SIZE" in capsys.readouterr().err
    monkeypatch.delenv("ESTEIRA_BATCH_SIZE")
    monkeypatch.setenv("ESTEIRA_WORKERS", "auto")
    assert entrypoint.main(["--model-dir", model_dir, "--dry-run"]) == 2
    assert "ESTEIRA_WORKERS='auto' is not an integer" in capsys.readouterr().err
    assert entrypoint.main(["--model-dir", str(tmp_path / "absent"), "--dry-run"]) == 2


# --- supervision, with stand-ins for TorchServe's launcher and Java frontend ---------------------

# The "frontend" writes its pid where the launcher's pid file goes, records the signal it gets, takes a
# moment to shut down, and exits; the "launcher" waits for it, as TorchServe's does in the foreground.
FRONTEND = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    open(os.path.join(out, ".model_server.pid"), "w").write(str(os.getpid()))
    def stop(signum, frame):
        time.sleep(0.5)
        open(os.path.join(out, "frontend-signal"), "w").write(str(signum))
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    open(os.path.join(out, "started"), "w").write("")
    time.sleep(float(sys.argv[2]))
    """
)
LAUNCHER = textwrap.dedent(
    """
    import os, signal, subprocess, sys
    def note(signum, frame):
        open(os.path.join(sys.argv[2], "launcher-signal"), "w").write(str(signum))
    signal.signal(signal.SIGTERM, note)
    subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
    """
)
SUPERVISOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from esteira.packaging.entrypoint import supervise
    out = Path(sys.argv[1])
    command = [sys.executable, "-c", sys.argv[2], sys.argv[3], str(out), sys.argv[4]]
    sys.exit(supervise(command, {"PATH": "/usr/bin:/bin"}, out, out / ".model_server.pid"))
    """
)


def _start_supervisor(tmp_path: Path, frontend_seconds: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    command = [sys.executable, "-c", SUPERVISOR, str(tmp_path), LAUNCHER, FRONTEND, str(frontend_seconds)]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert process.poll() is None, "supervisor exited early"
        assert time.monotonic() < deadline, "frontend never started"
        time.sleep(0.05)
    return process


def test_supervise_forwards_sigterm_to_frontend_and_waits(tmp_path: Path) -> None:
    process = _start_supervisor(tmp_path, frontend_seconds=60)
    frontend = int((tmp_path / ".model_server.pid").read_text())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert (tmp_path / "frontend-signal").read_text() == str(int(signal.SIGTERM))
    # Only the frontend is signalled: the rest of the group (TorchServe's workers) stops through it.
    assert not (tmp_path / "launcher-signal").exists()
    with pytest.raises(ProcessLookupError):  # the frontend finished before the supervisor returned
        os.kill(frontend, 0)


def test_supervise_unexpected_exit_is_a_failure(tmp_path: Path) -> None:
    process = _start_supervisor(tmp_path, frontend_seconds=0.2)
    assert process.wait(timeout=20) == 1
    assert not (tmp_path / "frontend-signal").exists()


def test_runtime_environment_keeps_every_scratch_file_under_the_runtime_dir(tmp_path: Path) -> None:
    env = entrypoint.runtime_environment({"TMPDIR": "/elsewhere", "LOG_LOCATION": "/var/log/ts", "X": "1"}, tmp_path)
    assert env["TEMP"] == env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["LOG_LOCATION"] == "/var/log/ts"  # an explicit log location is kept
    assert env["METRICS_LOCATION"] == str(tmp_path / "logs")
    assert env["X"] == "1"


def test_an_unasked_exit_stops_what_the_group_left_and_stays_a_failure(tmp_path: Path) -> None:
    """A process the launcher left behind kept the pod alive, not ready, serving nothing, until it ended by itself."""
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from esteira.packaging.entrypoint import supervise
        sys.exit(supervise(["sh", "-c", "sleep 600 & exit 3"], {"PATH": "/usr/bin:/bin"}, Path(sys.argv[1])))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env)
    assert process.wait(timeout=30) == 3  # not 600 s: the sleep left behind is stopped


def test_a_stop_asked_before_the_start_starts_nothing(tmp_path: Path) -> None:
    """As PID 1 a SIGTERM before the handlers were set was ignored, and TorchServe started anyway."""
    started = tmp_path / "started"
    code = supervise(["touch", str(started)], {"PATH": "/usr/bin:/bin"}, tmp_path, asked_to_stop=[signal.SIGTERM])
    assert code == 0 and not started.exists()


def test_markers_of_an_earlier_run_are_cleared_and_a_thread_is_no_process_of_the_group(tmp_path: Path) -> None:
    """The flush folder outlives a container restart: a marker naming a pid the next run reused had the flush
    signal kill a process that never listened (a thread's id passed the group check too)."""
    import threading

    from esteira.packaging.log_flush import FLUSHED, LISTENING, clear_markers
    from esteira.packaging.processes import in_group

    for name in (f"12{LISTENING}", f"12{FLUSHED}", "keep.txt"):
        (tmp_path / name).write_text("")
    clear_markers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    ready, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: (ready.set(), done.wait(10)))
    thread.start()
    ready.wait(10)
    try:
        assert thread.native_id is not None and thread.native_id != os.getpid()
        assert in_group(os.getpid(), os.getpgrp()) and not in_group(thread.native_id, os.getpgrp())
    finally:
        done.set()
        thread.join(10)
