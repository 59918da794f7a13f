"""CPUs a serving process may use, and each process's share when several serve side by side (esteira-kserve's
workers, an archive's TorchServe workers). Torch-free: the pod's entrypoint and ``esteira up`` size TorchServe's
workers with it, and the handlers' own thread choice (:mod:`model_handlers.threads`) rests on it."""

from __future__ import annotations

import os
from collections.abc import Mapping


def available_cpus(env: Mapping[str, str]) -> int:
    """CPUs this process may use: OMP_NUM_THREADS when set (the container's limit), else its CPU affinity."""
    declared = env.get("OMP_NUM_THREADS", "").strip()
    if declared.isdigit() and int(declared) > 0:
        return int(declared)
    return len(os.sched_getaffinity(0))


def threads_per_process(env: Mapping[str, str], processes: int) -> int:
    """Intra-op threads for each of ``processes`` serving processes sharing the CPUs: its share, less one for its
    server, at least one."""
    return max(1, available_cpus(env) // processes - 1)
