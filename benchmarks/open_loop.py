"""An open-loop load generator: requests sent at a fixed mean rate, Poisson arrivals, whatever the answers.

Why: wrk's connections each wait for an answer before they send again (a closed loop), so the table's
concurrency columns say how fast a server answers callers who always wait, not what a caller waits at a given
load. Here the arrivals do not wait: a batch delay, a queue or a hop shows in each request's time as it would to
independent callers, such as a service's users behind a gateway.

Run as its own process (``python -m benchmarks.open_loop``), so its CPU is its own (reported as ``cpu_cores``);
it prints one JSON line. Each request's time runs from the moment it is sent to its complete answer, on the
process's performance counter (uvloop's own clock moves in milliseconds); the event loop wakes at millisecond
steps, so arrivals due within one go together, and how late each went is reported too (``late_p99_ms``). A
request that finds ``MAX_OUTSTANDING`` unanswered is not sent and counted as an error: past that the server is
overloaded and the point says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import uvloop

from esteira.packaging.upstream import Upstream, UpstreamError, parse_url

MAX_OUTSTANDING = 512
ANSWER_SECONDS = 10.0


def arrivals(rate: float, seconds: float, seed: int) -> list[float]:
    """Offsets in seconds, from 0 up to ``seconds``, of a Poisson process of ``rate`` arrivals a second."""
    draw = random.Random(seed)
    times: list[float] = []
    at = draw.expovariate(rate)
    while at < seconds:
        times.append(at)
        at += draw.expovariate(rate)
    return times


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0-1) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass
class Offered:
    """What became of the requests offered at one rate."""

    latencies: list[float] = field(default_factory=list)  # seconds, answered with a 2xx
    late: list[float] = field(default_factory=list)  # seconds each request left after its arrival time
    failed: dict[str, int] = field(default_factory=dict)  # by status, "no answer" or "not sent"
    outstanding: int = 0

    @property
    def errors(self) -> int:
        return sum(self.failed.values())

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


async def offer(url: str, body: bytes, content_type: str, times: list[float]) -> Offered:
    """Send one request at each of ``times`` (seconds from now) to ``url``; wait for every answer."""
    _, host, port, target = parse_url(url)
    upstream = Upstream(f"http://{host}:{port}", answer_seconds=ANSWER_SECONDS, max_idle=MAX_OUTSTANDING)
    headers = {"content-type": content_type}
    offered = Offered()
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        began = time.perf_counter()
        try:
            reply = await upstream.request("POST", target, body, headers)
        except UpstreamError:
            offered.fail("no answer")
        else:
            if 200 <= reply.status < 300:
                offered.latencies.append(time.perf_counter() - began)
            else:
                offered.fail(str(reply.status))
        finally:
            offered.outstanding -= 1

    start = time.perf_counter() + 0.01
    for at in times:
        wait = start + at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        offered.late.append(max(0.0, time.perf_counter() - start - at))
        if offered.outstanding >= MAX_OUTSTANDING:
            offered.fail("not sent")
            continue
        offered.outstanding += 1
        task = loop.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    upstream.close()
    return offered


@dataclass(frozen=True)
class Report:
    """One rate's figures, as the generator prints them."""

    offered_rps: float
    sent: int
    answered: int
    errors: int
    failed: dict[str, int]
    answered_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    late_p99_ms: float
    cpu_cores: float


def run(url: str, body: bytes, content_type: str, rate: float, seconds: float, seed: int) -> Report:
    times = arrivals(rate, seconds, seed)
    began, cpu = time.perf_counter(), _own_cpu()
    offered = uvloop.run(offer(url, body, content_type, times))
    elapsed, cpu = time.perf_counter() - began, _own_cpu() - cpu
    ms = [value * 1e3 for value in offered.latencies]
    return Report(
        offered_rps=rate,
        sent=len(times),
        answered=len(ms),
        errors=offered.errors,
        failed=offered.failed,
        answered_rps=round(len(ms) / seconds, 1),
        p50_ms=round(percentile(ms, 0.5), 2),
        p90_ms=round(percentile(ms, 0.9), 2),
        p99_ms=round(percentile(ms, 0.99), 2),
        max_ms=round(max(ms, default=0.0), 2),
        late_p99_ms=round(percentile([value * 1e3 for value in offered.late], 0.99), 2),
        cpu_cores=round(cpu / elapsed, 3),
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--rate", type=float, required=True, help="requests a second, on average")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = run(args.url, args.body.read_bytes(), args.content_type, args.rate, args.seconds, args.seed)
    print(json.dumps(asdict(report)), flush=True)


if __name__ == "__main__":
    main()
