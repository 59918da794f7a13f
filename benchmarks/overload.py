"""Callers that give up: each model server under more load than its model can serve, its callers leaving at a
deadline and coming back with a new request, as a client's timeout or a proxy's makes them do.

Why: past its capacity a server's queue grows, and with it every request's wait; once the wait is longer than
the callers' deadline, a server that runs every request it holds spends its model on answers nobody reads while
the requests still wanted wait behind them. esteira-kserve's batcher, and the pod's front before TorchServe,
leave out a request whose caller has closed its connection and take the rest newest first while callers are
giving up (:mod:`esteira.packaging.caller_queue`); so does ``esteira up``'s router before TorchServe (its rows
run ``esteira up`` itself, its router before one model server of each runtime). The model here sleeps a fixed
time per batch (a device's time, not the CPU that the load generator shares with the server), so each server
can answer at most ``BATCH / SERVICE_SECONDS`` requests a second, whatever the batch holds. Callers that give up do so silently,
then saying in advance how long they wait, as Envoy does for the server behind it
(``x-envoy-expected-rq-timeout-ms``): both refuse at once what they could not answer in time; then half of them
wait as long as it takes.

``python -m benchmarks.overload`` (``make bench``) writes ``benchmarks/results/overload.json`` and ``overload.md``:
for each server and each kind of caller, the requests answered within the deadline a second (the goodput),
answered late, refused, given up on, what the model ran and what the server counted as abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.serving import RESULTS, machine
from esteira.packaging.upstream import TimedOut, Upstream, UpstreamError
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER
from tests.support.eager_package import eager_model, package_eager
from tests.support.kserve_runtime import KServeRuntimeProcess, request_counts
from tests.support.model_server import ModelServerProcess
from tests.support.pod_process import PodProcess

SERVICE_SECONDS = 0.02  # the model's time per batch, any size
BATCH = 8
CAPACITY = BATCH / SERVICE_SECONDS  # requests a second, at the most
CALLERS = 64  # a full queue of them waits 64 / 8 batches of 20 ms: longer than the deadline
DEADLINE_SECONDS = 0.1
# Callers that wait as long as it takes; that give up at the deadline; that give up and say so in advance; half
# of them waiting, half giving up without saying so (are the patient ones starved while the others are served?).
CALLER_KINDS = (
    (None, False, 0),
    (DEADLINE_SECONDS, False, 0),
    (DEADLINE_SECONDS, True, 0),
    (DEADLINE_SECONDS, False, CALLERS // 2),
)
RUN_SECONDS = 10.0
WARM_UP_SECONDS = 2.0
SLEEPY_MODEL = f"""
import time

import torch


class SleepyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep({SERVICE_SECONDS})
        return self.linear(x)
"""
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
PATH = "/v1/models/sleepy:predict"


@dataclass
class Tally:
    """What the callers saw."""

    answered: list[float] = field(default_factory=list)  # seconds to each answer with a prediction
    refused: int = 0  # answered with an error, or the connection closed without an answer
    gave_up: int = 0  # no answer within the deadline: the caller closed its connection


async def _caller(url: str, deadline: float | None, says: bool, until: float, tally: Tally) -> None:
    """Sends a request, waits for its answer up to ``deadline`` (None: as long as it takes; ``says``: and tells the
    server so), and sends the next on the same connection; a caller that gives up closes the connection (the
    client does, on its deadline) and sends again on a new one."""
    headers = {"Content-Type": "application/json"}
    if deadline is not None and says:  # as Envoy in front says how long it waits
        headers[EXPECTED_TIMEOUT_HEADER] = str(round(1000 * deadline))
    client = Upstream(url, answer_seconds=deadline, max_idle=1)
    try:
        while time.monotonic() < until:
            began = time.perf_counter()
            try:
                reply = await client.request("POST", PATH, BODY, headers)
            except TimedOut:
                tally.gave_up += 1
                continue
            except UpstreamError:  # no answer: the server closed the connection, or refused it
                reply = None
            if reply is None or reply.status != 200:  # refused: the caller tries again a deadline's worth later
                tally.refused += 1
                await asyncio.sleep(DEADLINE_SECONDS)
            else:
                tally.answered.append(time.perf_counter() - began)
    finally:
        client.close()


async def _drive(url: str, deadline: float | None, says: bool, seconds: float, patient: int) -> tuple[Tally, Tally]:
    """What the callers saw: those with ``deadline``, and the ``patient`` of them that wait as long as it takes."""
    tally, patient_tally = Tally(), Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(_caller(url, deadline, says, until, tally) for _ in range(CALLERS - patient)),
        *(_caller(url, None, False, until, patient_tally) for _ in range(patient)),
    )
    return tally, patient_tally


def _next_caller(url: str) -> float:
    """Seconds a caller who comes as the others stop waits for its answer: what it waits behind is what the
    server still holds."""
    began = time.perf_counter()
    request = urllib.request.Request(f"{url}{PATH}", BODY, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        answer.read()
    return time.perf_counter() - began


def point(
    url: str, metrics_urls: list[str], deadline: float | None, says: bool, patient: int, seconds: float
) -> dict[str, Any]:
    """One run of the callers, then one more caller as they stop; the server's counts are read after its queue
    has drained. Goodput and the percentiles are the callers' with ``deadline``; the ``patient`` callers' answers
    are counted apart."""
    asyncio.run(_drive(url, deadline, says, WARM_UP_SECONDS, patient))
    before = _drained(metrics_urls)
    tally, patient_tally = asyncio.run(_drive(url, deadline, says, seconds, patient))
    next_wait = _next_caller(url)
    after = _drained(metrics_urls)
    answered = sorted(tally.answered)
    in_time = sum(1 for took in answered if took <= DEADLINE_SECONDS)
    waited = sorted(patient_tally.answered)
    return {
        "deadline_s": deadline,
        "says_deadline": says,
        "patient_callers": patient,
        "patient_answered_rps": round(len(waited) / seconds, 1) if patient else None,
        "patient_p99_ms": round(1000 * waited[int(0.99 * (len(waited) - 1))], 1) if waited else None,
        "patient_longest_ms": round(1000 * waited[-1], 1) if waited else None,
        "next_caller_ms": round(1000 * next_wait, 1),
        "goodput_rps": round(in_time / seconds, 1),
        "late_rps": round((len(answered) - in_time) / seconds, 1),
        "refused_rps": round(tally.refused / seconds, 1),
        "gave_up_rps": round(tally.gave_up / seconds, 1),
        "model_ran_rps": round((after["ok"] - before["ok"]) / seconds, 1),
        "abandoned_rps": round((after["abandoned"] - before["abandoned"]) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(answered), 1) if answered else None,
        "p99_ms": round(1000 * answered[int(0.99 * (len(answered) - 1))], 1) if answered else None,
    }


def _counts(metrics_urls: list[str]) -> dict[str, float]:
    """The requests the model answered and those left out, added up over every place that counts them."""
    totals = {"ok": 0.0, "abandoned": 0.0}
    for url in metrics_urls:
        for key, value in request_counts(url).items():
            totals[key] += value
    return totals


def _drained(metrics_urls: list[str], within: float = 120.0) -> dict[str, float]:
    """The counts once two reads a second apart agree: what the callers left queued has run or been left out."""
    last = _counts(metrics_urls)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _counts(metrics_urls)
        if now == last:
            return now
        last = now
    raise RuntimeError(f"the servers at {metrics_urls} were still working off their queues after {within:.0f} s")


class LocalProcess(PodProcess):
    """``esteira up`` serving ``model_dir`` on one machine: its router, where clients connect, before one model
    server (TorchServe, or esteira-kserve for ``runtime``)."""

    what = "esteira up"
    log_name = "esteira-up.log"

    def __init__(self, model_dir: Path, root: Path, model_version: str, runtime: str | None) -> None:
        super().__init__(model_dir, root, model_version)
        self.runtime = runtime

    def command(self) -> list[str]:
        manifest = self.root / "sleepy.yaml"
        runtime = f", runtime: {self.runtime}" if self.runtime else ""
        model = f'{{name: sleepy, version: "{self.model_version}", storageUri: "{self.model_dir}"{runtime}}}'
        manifest.write_text(
            "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: sleepy}\n"
            f"spec:\n  model: {model}\n"
        )
        command = [sys.executable, "-m", "esteira.local.cli", "up", "-f", str(manifest), "--port", str(self.port)]
        return [*command, "--workdir", str(self.root / "work")]

    def metrics_urls(self) -> list[str]:
        """The router's (the requests it held whose callers left) and its model server's."""
        with urllib.request.urlopen(f"{self.url}/status", timeout=10) as answer:
            servers = json.loads(answer.read())["servers"]
        return [f"{self.url}/metrics", *(server["metrics"] for server in servers.values())]


def servers(packaged: Path, work: Path) -> dict[str, tuple[PodProcess, Callable[[], list[str]]]]:
    """Each server as a pod, or ``esteira up``, runs it (started as its context is entered), and where its counts
    are read once it runs."""
    kserve = KServeRuntimeProcess(packaged, work / "esteira-kserve", "1.0.0")
    pod = ModelServerProcess(packaged, work / "torchserve", "1.0.0")
    local_torchserve = LocalProcess(packaged, work / "up-torchserve", "1.0.0", None)
    local_kserve = LocalProcess(packaged, work / "up-esteira-kserve", "1.0.0", "esteira-kserve")
    return {
        "esteira-kserve": (kserve, lambda: [f"{kserve.url}/metrics"]),
        "TorchServe (the pod's front joining up to 8)": (pod, lambda: [pod.metrics_url]),
        "esteira up: router, esteira-kserve": (local_kserve, local_kserve.metrics_urls),
        "esteira up: router, TorchServe (the router joining up to 8)": (
            local_torchserve,
            local_torchserve.metrics_urls,
        ),
    }


def run(seconds: float, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": machine(),
        "model": {"service_seconds_per_batch": SERVICE_SECONDS, "batch": BATCH, "capacity_rps": CAPACITY},
        "callers": CALLERS,
        "deadline_s": DEADLINE_SECONDS,
        "seconds": seconds,
        "rows": {},
    }
    with tempfile.TemporaryDirectory(prefix="esteira-overload-") as scratch:
        work = Path(scratch)
        source = SLEEPY_MODEL
        config = {"kind": "tabular", "task": "classification", "n_features": 4, "labels": ["a", "b", "c"]}
        model = eager_model(source, "SleepyClassifier")
        packaged = package_eager(work / "model", "sleepy", source, model, config, metrics=True)
        for name, (started, metrics_urls) in servers(packaged, work).items():
            if only and not any(part in name for part in only):
                continue
            with started as server:
                counted = metrics_urls()
                rows = [point(server.url, counted, *kind, seconds) for kind in CALLER_KINDS]
            results["rows"][name] = rows
            for row in rows:
                print(name, json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "overload.md").write_text(markdown(results))
    return results


def markdown(results: dict[str, Any]) -> str:
    model, cpu = results["model"], results["machine"]
    lines = [
        "# Callers that give up",
        "",
        f"Written by `make bench` (`python -m benchmarks.overload`). Machine: {cpu.get('cpu', '?')}, "
        f"{cpu.get('cores_usable', '?')} usable cores. A model that takes {1000 * model['service_seconds_per_batch']:g} ms "
        f"a batch of up to {model['batch']} (asleep: a device's time), so at most {model['capacity_rps']:g} "
        f"requests a second; {results['callers']} callers, each sending its next request as soon as it has an "
        f"answer, for {results['seconds']:g} s after a warm-up. Callers that wait as long as it takes, then "
        f"callers that give up after {1000 * results['deadline_s']:g} ms, close the connection and send again on a "
        "new one (a refused caller tries again that much later), then such callers saying how long they wait, as "
        "Envoy in front of a server does (`x-envoy-expected-rq-timeout-ms`), then half of them waiting and half "
        "giving up without saying so. Goodput: answers within that deadline, a second; late: answers after it; p50 "
        "and p99 are every answer's, the patient half's counted apart (answers a second, p99 and the longest wait). "
        "What the model ran is the handler's count, read once the queue had "
        "drained; the next caller is one request sent as the others stop, and what it waited is what the server "
        "still held for callers who had gone. The `esteira up` rows are its router before one model server, "
        "as `esteira up` runs them; the router passes a deadline said to it on, and counts the requests it held "
        "whose callers left with the model server's.",
        "",
        "| server | callers | goodput req/s | late req/s | refused req/s | gave up req/s | model ran req/s "
        "| abandoned req/s | p50 ms | p99 ms | the next caller waited ms | patient callers: req/s, p99 / longest ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results["rows"].items():
        for row in rows:
            who = "wait" if row["deadline_s"] is None else f"give up at {1000 * row['deadline_s']:g} ms"
            who += ", saying so" if row["says_deadline"] else ""
            patient = row.get("patient_callers") or 0
            if patient:
                who = f"{patient} wait, {results['callers'] - patient} {who}"
            figures = [row[key] for key in ("goodput_rps", "late_rps", "refused_rps", "gave_up_rps")]
            figures += [row["model_ran_rps"], row["abandoned_rps"], row["p50_ms"], row["p99_ms"], row["next_caller_ms"]]
            cells = ["" if figure is None else f"{figure:,}" for figure in figures]
            if patient:
                cells.append(
                    f"{row['patient_answered_rps']:,}, {row['patient_p99_ms']:,} / {row['patient_longest_ms']:,}"
                )
            else:
                cells.append("")
            lines.append(f"| {name} | {who} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=RUN_SECONDS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="+", help="the servers whose names hold one of these (default: all)")
    arguments = parser.parse_args()
    run(arguments.seconds, arguments.out, arguments.only)


if __name__ == "__main__":
    main()
