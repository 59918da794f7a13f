"""The model server's front on its own, before one TorchServe: the hop every request to a TorchServe pod crosses."""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import urllib.request
from pathlib import Path

from esteira.packaging.admission import Admission, at_once
from esteira.packaging.front import DEFAULT_MAX_BODY, FrontThread, TorchServeSurface
from esteira.packaging.heap import freeze_startup_heap
from esteira.packaging.joiner import Joining
from esteira.packaging.surface import served_model


def torchserve_at_once(management: str, model: str) -> int | None:
    """How many requests go through to TorchServe at once, by the batches and workers its management API says it
    runs ``model`` with (the entrypoint and ``esteira up`` read them from its config.properties)."""
    with urllib.request.urlopen(f"{management}/models/{model}", timeout=30) as answer:
        described = json.loads(answer.read())
    return at_once([(int(entry["batchSize"]), int(entry["minWorkers"])) for entry in described])


def torchserve_workers(management: str, model: str) -> int:
    """The workers TorchServe runs ``model`` with, by its management API."""
    with urllib.request.urlopen(f"{management}/models/{model}", timeout=30) as answer:
        return sum(int(entry["minWorkers"]) for entry in json.loads(answer.read()))


def torchserve_admission(
    management: str, model: str, join: int, delay_ms: int | None = None
) -> tuple[int | None, Joining | None]:
    """How many requests go through to ``model``'s TorchServe at once and how they are joined: up to ``join`` in
    one before a TorchServe serving it unbatched (as the entrypoint and ``esteira up`` run a batched archive),
    waiting ``delay_ms`` for company; with ``join`` 1, by TorchServe's own batches and workers, not joined."""
    if join < 2:
        return torchserve_at_once(management, model), None
    workers = torchserve_workers(management, model)
    return at_once([(join, workers)]), Joining.for_model(join, workers, DEFAULT_MAX_BODY, delay_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True, help="TorchServe's inference address")
    parser.add_argument("--management", required=True, help="TorchServe's management address")
    parser.add_argument("--metrics", required=True, help="TorchServe's metrics address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--join",
        type=int,
        default=1,
        help="join up to this many requests in one, as the entrypoint does for a "
        "model it registers unbatched with TorchServe (which must serve it unbatched)",
    )
    parser.add_argument(
        "--delay-ms", type=int, help="with --join: how long a request waits for company (batching.maxBatchDelayMs)"
    )
    parser.add_argument("--model-name", help="the name TorchServe serves the model by (default: the folder's)")
    args = parser.parse_args()
    served = served_model(args.model_dir)
    if args.model_name:
        served = dataclasses.replace(served, name=args.model_name)
    limit, joining = torchserve_admission(args.management, served.name, args.join, args.delay_ms)
    admission = None if limit is None else Admission(limit)
    surface = TorchServeSurface(served, served.version, args.backend, args.management, args.metrics, admission, joining)
    FrontThread(surface, "127.0.0.1", args.port).start()  # as the pod's entrypoint runs it
    freeze_startup_heap()  # as the pod's entrypoint does once its front is up
    threading.Event().wait()


if __name__ == "__main__":
    main()
