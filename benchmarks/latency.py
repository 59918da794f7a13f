"""Latency at a fixed offered load: what independent callers wait, at rates below each server's capacity.

Why: the serving table's callers each wait for an answer before sending again, so at one caller it shows a batch
delay and at many it shows the top rate, but not what a caller waits while a server is busy without being
overloaded, which is where a service runs. Here requests arrive at a fixed mean rate whatever the answers (a
Poisson process, ``benchmarks.open_loop``), and each point reports the answers' p50 / p90 / p99 and the server's
CPU a request. The rows are the iris model's TorchServe pod before joining (its front before TorchServe batching
8 within 10 ms), the pod as the entrypoint runs it now (the front joining callers' requests before TorchServe
unbatched), that pod for a ModelDeployment with ``batching.maxBatchDelayMs: 5`` (a request waits up to 5 ms for
company), esteira-kserve, and ``esteira up``'s router before each runtime as ``esteira up`` runs them (joining
requests before TorchServe unbatched; esteira-kserve on its Unix socket), every Esteira handler logging each
request.

``python -m benchmarks.latency`` (``make bench``) writes ``benchmarks/results/latency.json`` and ``latency.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.load import LOADGEN_CPU_LIMIT, cpu_seconds
from benchmarks.serving import (
    GROUPS,
    JOIN_DELAY_MS,
    RESULTS,
    RUNTIME_PYTHON,
    V1_PATH,
    Bench,
    RecordSink,
    Servers,
    Target,
    archives,
    machine,
    write_bodies,
)

ROWS = (
    "front+ts-esteira-b8",
    "front-joining+ts-esteira",
    "front-joining-delayed+ts-esteira",
    "router-joining+ts-esteira",
    "esteira-kserve",
    "router+esteira-kserve",
)
DELAYED = Target(
    "front-joining-delayed+ts-esteira",
    f"a TorchServe pod's port: the front joining up to 8 requests, waiting up to {JOIN_DELAY_MS} ms for company "
    "(batching.maxBatchDelayMs) -> TorchServe + Esteira unbatched",
    "front-joining-delayed:ts:iris_b1",
    V1_PATH.format("iris_b1"),
    "iris-v1",
)
RATES = (100, 500, 1000, 2000, 3000)  # requests a second offered; the slowest row answers about 4,500 at most
QUICK_RATES = (200, 2000)
SECONDS = 5.0
ROUNDS = 3  # each point is the median round; rows alternate within a round, every other round reversed
WARM_UP_CONCURRENCY = 32


def targets() -> list[Target]:
    by_key = {target.key: target for group in GROUPS.values() for target in group} | {DELAYED.key: DELAYED}
    return [by_key[key] for key in ROWS]


def _machine_pids(servers: Servers, target: Target) -> list[int]:
    """The processes whose CPU a request costs: a router's and the model server's behind it together, as they
    share the machine (a pod's front is counted with its TorchServe already)."""
    kind, _, behind = target.server.partition(":")
    running = servers.get(target.server)
    return running.pids + servers.get(behind).pids if kind.startswith("router") else running.pids


def point(url: str, body: Path, content_type: str, rate: float, seconds: float, pids: list[int]) -> dict[str, Any]:
    """One rate offered by the generator in its own process; its figures and the server's CPU a request."""
    before = cpu_seconds(pids)
    began = time.perf_counter()
    command = [sys.executable, "-m", "benchmarks.open_loop", url, "--body", str(body), "--content-type", content_type]
    command += ["--rate", str(rate), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    elapsed = time.perf_counter() - began
    server = cpu_seconds(pids) - before
    line = next((line for line in done.stdout.splitlines() if line.startswith("{")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"the generator failed on {url} (exit {done.returncode}):\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(line)
    figures["server_cores"] = round(server / elapsed, 3)
    figures["server_cpu_us_per_request"] = round(server / max(figures["answered"], 1) * 1e6, 1)
    figures["loadgen_bound"] = figures["cpu_cores"] > LOADGEN_CPU_LIMIT
    return figures


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median p99 (its other figures belong to it); errors summed over all rounds."""
    ordered = sorted(rounds, key=lambda figures: figures["p99_ms"])
    middle = dict(ordered[len(ordered) // 2])
    middle["errors"] = sum(figures["errors"] for figures in rounds)
    failed: dict[str, int] = {}
    for figures in rounds:
        for why, count in figures["failed"].items():
            failed[why] = failed.get(why, 0) + count
    middle["failed"] = failed
    middle["rounds_p99_ms"] = [figures["p99_ms"] for figures in rounds]
    return middle


def run(out: Path, rates: tuple[int, ...], seconds: float, rounds: int, quick: bool = False) -> dict[str, Any]:
    if not RUNTIME_PYTHON.exists():
        raise SystemExit("run `make kserve-runtime` first (the esteira-kserve environment)")
    work = Path(tempfile.mkdtemp(prefix="esteira-latency-"))
    store = work / "store"
    archives(store)
    bodies = write_bodies(work)
    bench = Bench(bodies, [WARM_UP_CONCURRENCY], seconds=2.0, repeats=1, warm_up_floors=not quick)
    sink = RecordSink()
    servers = Servers(work, store, sink)
    rows: dict[str, dict[str, Any]] = {}
    began = time.monotonic()
    try:
        started = [(target, servers.get(target.server)) for target in targets()]
        pids = {target.key: _machine_pids(servers, target) for target, _ in started}
        for target, running in started:
            rows[target.key] = {"title": target.title, "warm_up_seconds": bench.warm_up(running, target), "points": {}}
        for rate in rates:
            measured: dict[str, list[dict[str, Any]]] = {target.key: [] for target, _ in started}
            for index in range(rounds):
                for target, running in started if index % 2 == 0 else started[::-1]:
                    body, content_type = bodies[target.body]
                    figures = point(running.url + target.path, body, content_type, rate, seconds, pids[target.key])
                    measured[target.key].append(figures)
                    print(
                        f"{target.key:28s} {rate:5d}/s  answered {figures['answered_rps']:7.1f}/s  p50 "
                        f"{figures['p50_ms']:6.2f}  p99 {figures['p99_ms']:7.2f} ms  errors {figures['errors']}",
                        flush=True,
                    )
            for key, rounds_of_key in measured.items():
                rows[key]["points"][str(rate)] = median_round(rounds_of_key)
        dropped = servers.dropped_records()
    finally:
        servers.close()
        sink.close()
    results = {
        "machine": machine(),
        "seconds_per_point": seconds,
        "rounds": rounds,
        "inference_log": {"sample_rate": 1.0, "posts": sink.posts, "bytes": sink.bytes, "dropped": dropped},
        "rows": rows,
        "wall_seconds": round(time.monotonic() - began),
    }
    out.mkdir(parents=True, exist_ok=True)
    name = "latency-quick" if quick else "latency"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    return results


def markdown(results: dict[str, Any]) -> str:
    rows: dict[str, dict[str, Any]] = results["rows"]
    rates = list(next(iter(rows.values()))["points"]) if rows else []
    machine_line = ", ".join(f"{key} {value}" for key, value in results["machine"].items())
    lines = [
        "# Latency at a fixed offered load",
        "",
        f"Written by `make bench` (`python -m benchmarks.latency`). Machine: {machine_line}.",
        "",
        "Requests for the iris model (one instance, KServe v1) arrive at a fixed mean rate, Poisson, whatever the "
        "answers (`benchmarks/open_loop.py`, its own process; its CPU is `gen cores`). Each point: "
        f"{results['seconds_per_point']:g} s, the median of {results['rounds']} rounds by p99, the rows "
        "alternating within a round; times from a request written to its whole answer, in ms; `server us/req` is "
        "the CPU of the server's processes (the pod's front and TorchServe together; `esteira up`'s router and "
        "the server behind it together) a request. Every Esteira "
        f"handler logs each request (a collector stand-in received {results['inference_log']['posts']:,} batches; "
        f"{results['inference_log']['dropped']} records dropped).",
        "",
        "| what | offered req/s | answered req/s | p50 ms | p90 ms | p99 ms | server us/req | gen cores | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in rows.items():
        for rate in rates:
            figures = row["points"][rate]
            flag = " !" if figures["loadgen_bound"] else ""
            lines.append(
                f"| {row['title']} (`{key}`) | {int(float(rate)):,} | {figures['answered_rps']:,} | "
                f"{figures['p50_ms']} | {figures['p90_ms']} | {figures['p99_ms']} | "
                f"{figures['server_cpu_us_per_request']} | {figures['cpu_cores']}{flag} | {_errors(figures)} |"
            )
    lines += [
        "",
        "p99 by rate, side by side (ms):",
        "",
        "| offered req/s | " + " | ".join(f"`{k}`" for k in rows) + " |",
    ]
    lines.append("| --- |" + " --- |" * len(rows))
    for rate in rates:
        cells = [str(row["points"][rate]["p99_ms"]) for row in rows.values()]
        lines.append(f"| {int(float(rate)):,} | " + " | ".join(cells) + " |")
    medians = {key: statistics.median(row["points"][r]["p50_ms"] for r in rates) for key, row in rows.items()}
    lines += ["", "Median p50 over the rates (ms): " + ", ".join(f"`{k}` {v:g}" for k, v in medians.items()) + "."]
    return "\n".join(lines) + "\n"


def _errors(figures: dict[str, Any]) -> str:
    """Errors over every round, and what they were: ``272 (503: 272)``."""
    failed = figures.get("failed") or {}
    said = ", ".join(f"{why}: {count}" for why, count in sorted(failed.items()))
    return f"{figures['errors']} ({said})" if said else str(figures["errors"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="two rates, 1 s single points, no JVM warm-up floor")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES), help="requests a second offered")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        run(args.out, QUICK_RATES, 1.0, 1, quick=True)
    else:
        run(args.out, tuple(args.rates), args.seconds, args.rounds)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
