"""``esteira up``'s router on its own, in front of one backend: the router's cost measured alone."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop

from esteira.local.router import Router
from esteira.local.split import Split
from esteira.packaging.heap import freeze_startup_heap
from esteira.packaging.surface import served_model


async def serve(model_dir: Path, backend: str, port: int) -> None:
    served = served_model(model_dir)
    router = Router(served.name, port)
    router.describe(1, served.version, served.config)
    router.set_backend(1, backend)
    router.set_split(Split(stable=1), mirror=False)
    await router.start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    freeze_startup_heap()  # as `esteira up` does before its router serves: its full collections skip start-up's objects
    uvloop.run(serve(args.model_dir, args.backend, args.port))  # as `esteira up` runs it


if __name__ == "__main__":
    main()
