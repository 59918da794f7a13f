"""Intra-op threads: one CPU left to the server, the container's limit respected, an explicit number obeyed."""

from __future__ import annotations

import os

import pytest

from esteira.packaging.cpus import available_cpus, threads_per_process
from model_handlers.threads import ThreadsError, intra_op_threads


@pytest.mark.parametrize(("limit", "threads"), [("1", 1), ("2", 1), ("4", 3), ("16", 15)])
def test_the_container_limit_less_one_cpu_for_the_server(limit: str, threads: int) -> None:
    assert intra_op_threads({"OMP_NUM_THREADS": limit}) == threads


def test_without_a_limit_the_processs_cpu_affinity_counts() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert available_cpus({}) == cpus
    assert intra_op_threads({}) == max(1, cpus - 1)


def test_an_explicit_number_wins() -> None:
    assert intra_op_threads({"ESTEIRA_TORCH_THREADS": "6", "OMP_NUM_THREADS": "2"}) == 6


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_number_that_is_not_a_positive_whole_number_is_refused_by_name(value: str) -> None:
    with pytest.raises(ThreadsError, match=f"ESTEIRA_TORCH_THREADS must be a whole number.*{value!r}"):
        intra_op_threads({"ESTEIRA_TORCH_THREADS": value})


@pytest.mark.parametrize(("limit", "workers", "threads"), [("2", 2, 1), ("4", 2, 1), ("16", 2, 7), ("16", 4, 3)])
def test_each_worker_takes_its_share_of_the_cpus_less_one_for_its_server(
    limit: str, workers: int, threads: int
) -> None:
    assert threads_per_process({"OMP_NUM_THREADS": limit}, workers) == threads
