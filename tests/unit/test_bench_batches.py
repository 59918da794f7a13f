"""The serving bench reads requests per batch from esteira-kserve's ``esteira_batch_size`` histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from benchmarks.serving import batch_totals, batch_totals_of, mean_batch
from tests.support.net import free_port


def exposition(batches: dict[str, list[int]]) -> str:
    """What a server's /metrics says after the batches of each revision (a real registry's text)."""
    registry = CollectorRegistry()
    histogram = Histogram("esteira_batch_size", "requests in a batch", ["Revision"], registry=registry)
    for revision, sizes in batches.items():
        for size in sizes:
            histogram.labels(revision).observe(size)
    return generate_latest(registry).decode()


def test_every_series_of_the_histogram_adds_up() -> None:
    text = exposition({"1": [8, 8, 2], "2": [1]})
    assert batch_totals_of(text) == (4.0, 19.0)


def test_a_server_without_batches_has_no_totals() -> None:
    assert batch_totals_of(exposition({})) is None
    assert batch_totals_of('esteira_requests_total{outcome="ok"} 3.0\n') is None


def test_the_mean_is_over_the_batches_between_two_readings() -> None:
    before = batch_totals_of(exposition({"1": [1, 1]}))
    after = batch_totals_of(exposition({"1": [1, 1, 8, 6, 4]}))
    assert mean_batch(before, after) == 6.0


def test_no_batch_between_the_readings_or_a_missing_one_gives_no_mean() -> None:
    reading = batch_totals_of(exposition({"1": [3]}))
    assert mean_batch(reading, reading) is None
    assert mean_batch(None, reading) is None


def test_a_server_that_does_not_answer_gives_no_reading() -> None:
    assert batch_totals(f"http://127.0.0.1:{free_port()}/metrics") is None  # nothing listens: refused
    assert batch_totals("") is None
