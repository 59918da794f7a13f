"""Running the emulator for synchronous tests: a real HTTP server on 127.0.0.1 in a background thread.

The operator under test (Kopf in ``KopfRunner``) and the ``kubernetes`` client both need a real URL;
a thread with its own event loop lets plain (non-async) pytest tests and fixtures own the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp.web
import yaml

from .emulator import KubeEmulator
from .faults import FaultInjector, FaultPlan

T = TypeVar("T")
DUMMY_TOKEN = "emulator-token"  # the emulator checks no credentials; clients just need something to send


class EmulatorServer:
    """Serves a :class:`KubeEmulator` on a free port of 127.0.0.1 until :meth:`stop` (or the ``with`` block ends)."""

    def __init__(self, emulator: KubeEmulator | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator()
        self._host, self._port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    @property
    def url(self) -> str:
        if not self._ready.is_set() or self._failure is not None:
            raise RuntimeError("the emulator is not running")
        return f"http://{self._host}:{self._port}"

    @property
    def faults(self) -> FaultInjector:
        return self.emulator.faults

    def start(self, timeout: float = 10.0) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the emulator did not start in time")
        if self._failure is not None:
            raise RuntimeError("the emulator failed to start") from self._failure
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the watch streams, stop the HTTP server and the loop; safe to call twice."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------------------

    def set_faults(self, **plan: Any) -> FaultPlan:
        """Replace the fault plan (see :class:`FaultPlan` for the fields); the RNG restarts from its seed."""
        self.faults.plan = FaultPlan(**plan)
        return self.faults.plan

    def clear_faults(self) -> None:
        self.faults.clear()

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the server's loop, for consistent reads of the emulator's state from a test."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running")

        async def run() -> T:
            return fn()

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(timeout)

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig that points at this server (plain HTTP, dummy token) and return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "emulator", "user": {"token": DUMMY_TOKEN}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace}}
            ],
            "current-context": "emulator",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    # -- the server thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        async with self.emulator:
            # Handler cancellation ends a watch handler as soon as its client disconnects.
            runner = aiohttp.web.ServerRunner(
                aiohttp.web.Server(self.emulator, handler_cancellation=True), shutdown_timeout=1.0
            )
            await runner.setup()
            try:
                site = aiohttp.web.TCPSite(runner, self._host, self._port)
                await site.start()
                self._port = runner.addresses[0][1]
                self._ready.set()
                await self._stopping.wait()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self.emulator.close_watches()
            finally:
                await runner.cleanup()
