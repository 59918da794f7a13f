"""Bytes of log TorchServe writes per 10,000 requests through Esteira's model server.

Run from the repository root: ``.venv/bin/python hack/log-volume.py [requests]``. It serves the packaged iris
model (``make models``) with the entrypoint, sends the requests through the front, stops the server and
counts every byte under its log folder plus its console output.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.model_server import ModelServerProcess  # noqa: E402

BODY = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


async def send(url: str, total: int, clients: int = 8) -> dict[int, int]:
    statuses: dict[int, int] = {}
    remaining = iter(range(total))
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            for _ in remaining:
                async with session.post(f"{url}/v1/models/iris:predict", json=BODY) as answer:
                    await answer.read()
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def log_bytes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*.log*")) if p.is_file()}


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with ModelServerProcess(ROOT / "build/models/iris-1.0.0", root, "1.0.0") as server:
            before = sum(log_bytes(root).values())
            statuses = asyncio.run(send(server.url, total))
        sizes = log_bytes(root)
        for name, size in sizes.items():
            print(f"{size:>12,}  {name}")
        print(f"answers: {statuses}")
        print(f"{sum(sizes.values()) - before:,} bytes of log for {total:,} requests (start-up excluded)")


if __name__ == "__main__":
    main()
