"""The open-loop load generator the latency benchmark uses: its arrivals, its percentiles, and what it counts
against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import statistics

import pytest
import uvloop

from benchmarks.open_loop import Offered, arrivals, offer, percentile

ANSWER_DELAY = 0.005


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: every request answered after ANSWER_DELAY, 200, or 503 for a body of ``fail``."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            body = await reader.readexactly(length)
            await asyncio.sleep(ANSWER_DELAY)
            status = b"503 Service Unavailable" if body == b"fail" else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 2\r\n\r\nok")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _offer_to_a_server(body: bytes, times: list[float]) -> Offered:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await offer(f"http://127.0.0.1:{port}/v1/models/m:predict", body, "application/json", times)


def test_arrivals_are_a_poisson_process_of_the_rate() -> None:
    times = arrivals(1000.0, 10.0, seed=7)
    assert times == sorted(times) and times[0] > 0 and times[-1] < 10.0
    assert 9_700 < len(times) < 10_300
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.mean(gaps) == pytest.approx(0.001, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.001, rel=0.05), "exponential gaps: the deviation is the mean"
    assert arrivals(1000.0, 10.0, seed=7) == times and arrivals(1000.0, 10.0, seed=8) != times


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([], 0.99) == 0.0


def test_every_request_is_sent_on_time_and_timed_to_its_answer() -> None:
    times = [i * 0.002 for i in range(100)]  # 500 a second, each answered 5 ms later: several at once
    offered = uvloop.run(_offer_to_a_server(b"{}", times))  # the loop the generator runs
    latencies = offered.latencies
    assert (len(latencies), offered.errors, offered.outstanding) == (100, 0, 0)
    assert min(latencies) >= ANSWER_DELAY - 0.001  # the server sleeps on the loop's millisecond clock
    assert statistics.median(latencies) < ANSWER_DELAY + 0.05
    assert len(set(latencies)) > 50, "timed finer than uvloop's own clock, which moves in milliseconds"


def test_a_refused_request_is_an_error_not_a_latency() -> None:
    offered = uvloop.run(_offer_to_a_server(b"fail", [0.0, 0.001, 0.002]))
    assert (offered.latencies, offered.errors, offered.failed) == ([], 3, {"503": 3})
