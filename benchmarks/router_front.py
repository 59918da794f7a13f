"""``esteira up``'s router on its own, in front of one backend: the router's cost measured alone."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path

import uvloop

from benchmarks.model_server_front import torchserve_admission
from esteira.local.router import Router
from esteira.local.split import Split
from esteira.packaging.heap import freeze_startup_heap
from esteira.packaging.joiner import Joining
from esteira.packaging.surface import ServedModel, served_model


async def serve(served: ServedModel, backend: str, port: int, management: str | None, join: int) -> None:
    router = Router(served.name, port)
    router.describe(1, served.version, served.config)
    # before TorchServe, esteira up holds what it cannot start soon (while callers give up) and joins requests;
    # before esteira-kserve on its socket, it joins what would queue beyond two of its batches (one worker here)
    if management:
        limit, joining = torchserve_admission(management, served.name, join)
    else:  # and holds what is past two batches, newest first, while callers give up
        joining = Joining.for_batcher(join, 1, served.config.max_body_bytes)
        limit = joining.at_once if joining is not None else None
    router.set_backend(1, backend, limit, joining)
    router.set_split(Split(stable=1), mirror=False)
    await router.start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--management", help="the management address of the TorchServe it is before, if it is")
    parser.add_argument(
        "--join",
        type=int,
        default=1,
        help="join up to this many requests in one, as esteira up does before a TorchServe it registers unbatched "
        "(with --management; TorchServe must serve the model unbatched) and before esteira-kserve on its Unix socket",
    )
    parser.add_argument("--model-name", help="the name the backend serves the model by (default: the folder's)")
    args = parser.parse_args()
    served = served_model(args.model_dir)
    if args.model_name:
        served = dataclasses.replace(served, name=args.model_name)
    freeze_startup_heap()  # as `esteira up` does before its router serves: its full collections skip start-up's objects
    uvloop.run(serve(served, args.backend, args.port, args.management, args.join))  # as `esteira up` runs it


if __name__ == "__main__":
    main()
