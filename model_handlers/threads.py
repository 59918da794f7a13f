"""How many threads torch may use for one operator (its intra-op pool), chosen once per serving process.

Why not torch's default (every CPU the machine has): the model shares the CPUs with the server in front of it
(KServe's event loop, or TorchServe's frontend), and a small model's operators finish before a pool of threads
pays for waking up; idle pool threads also spin while they wait for the next operator. On a 2-CPU machine the
esteira-kserve runtime served 2x the requests at one concurrent caller, and 1.4x at 32, with one intra-op thread
instead of two. So the default leaves one CPU to the server: the CPUs this process may use (the container's CPU
limit, which the serving runtimes pass as ``OMP_NUM_THREADS``, else the scheduler's affinity) minus one, at
least one. ``ESTEIRA_TORCH_THREADS`` sets the number outright (a large model on many CPUs may want them all);
esteira-kserve's supervisor sets it for each of several workers (``ESTEIRA_WORKERS``) to that worker's share of
the CPUs, less one for its own server, and so do TorchServe's launchers (the pod's entrypoint, ``esteira up``)
where the archive starts several TorchServe workers.
"""

from __future__ import annotations

from collections.abc import Mapping

from esteira.packaging.cpus import threads_per_process
from esteira.vocabulary import ENV_TORCH_THREADS


class ThreadsError(RuntimeError):
    """ESTEIRA_TORCH_THREADS is not a positive whole number: the model load fails with this message."""


def intra_op_threads(env: Mapping[str, str]) -> int:
    """The intra-op thread count for this process (see the module docstring)."""
    chosen = env.get(ENV_TORCH_THREADS, "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise ThreadsError(f"{ENV_TORCH_THREADS} must be a whole number of threads, at least 1, not {chosen!r}")
        return int(chosen)
    return threads_per_process(env, 1)
