"""``esteira up``'s router on its own, in front of one backend: the router's cost measured alone."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop

from benchmarks.model_server_front import torchserve_at_once
from esteira.local.router import Router
from esteira.local.split import Split
from esteira.packaging.heap import freeze_startup_heap
from esteira.packaging.surface import served_model


async def serve(model_dir: Path, backend: str, port: int, management: str | None) -> None:
    served = served_model(model_dir)
    router = Router(served.name, port)
    router.describe(1, served.version, served.config)
    # before TorchServe, esteira up holds what it cannot start soon (while callers give up): so does this one
    router.set_backend(1, backend, torchserve_at_once(management, served.name) if management else None)
    router.set_split(Split(stable=1), mirror=False)
    await router.start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--management", help="the management address of the TorchServe it is before, if it is")
    args = parser.parse_args()
    freeze_startup_heap()  # as `esteira up` does before its router serves: its full collections skip start-up's objects
    uvloop.run(serve(args.model_dir, args.backend, args.port, args.management))  # as `esteira up` runs it


if __name__ == "__main__":
    main()
