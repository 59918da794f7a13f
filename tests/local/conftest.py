"""Running the local runtime from synchronous tests: its event loop lives in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from esteira.local.loadgen import LoadGenerator
from esteira.local.manifest import write_whole
from esteira.local.runtime import LocalRuntime
from tests.support.kserve_runtime import RUNTIME_PYTHON as KSERVE_PYTHON
from tests.support.prerequisites import require_file
from tests.support.torchserve import require_torchserve
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "build" / "models"
T = TypeVar("T")

MANIFEST = """\
apiVersion: serving.esteira.io/v1alpha1
kind: ModelDeployment
metadata: {{name: iris}}
spec:
  model: {{name: iris, version: "{version}", storageUri: "{folder}"{runtime}}}
  logging: {{mode: {log_mode}, sampleRate: 1.0}}
  rollout:
    steps: [50, 100]
    interval: 2s
    threshold: 1
    progressDeadline: {progress_deadline}
    mirror: {mirror}
    pauseBefore: {pause_before}
    analysis:
      minRequests: 10
      lowTrafficDeadline: 1m
      predictionShift: {{max: 0.1}}
"""


# spec.model.runtime values `esteira up` serves: none (TorchServe) and esteira-kserve.
RUNTIMES: tuple[str | None, ...] = (None, "esteira-kserve")


def write_manifest(
    path: Path,
    version: str,
    build: str | Path,
    mirror: bool = False,
    pause_before: tuple[int, ...] = (),
    runtime: str | None = None,
    log_mode: str = "none",
    progress_deadline: str = "10m",
) -> None:
    """A ModelDeployment serving ``build``: a demo model's name, or the path of a model folder of its own."""
    write_whole(
        path,
        MANIFEST.format(
            version=version,
            folder=MODELS / build,
            mirror=str(mirror).lower(),
            pause_before=list(pause_before),
            runtime=f", runtime: {runtime}" if runtime else "",
            log_mode=log_mode,
            progress_deadline=progress_deadline,
        ),
    )


def need_models() -> None:
    for build in ("iris-1.0.0", "iris-1.1.0"):
        require_file(MODELS / build / "config" / "config.properties", "run `make models`")


def need_torchserve() -> None:
    require_torchserve()
    need_models()


def need_runtime(runtime: str | None) -> None:
    """TorchServe, or esteira-kserve's own environment (`make kserve-runtime`), and the demo models."""
    if runtime == "esteira-kserve":
        require_file(KSERVE_PYTHON, "run `make kserve-runtime`")
        need_models()
    else:
        need_torchserve()


class RuntimeThread:
    """A LocalRuntime ticking in its own thread and event loop until `stop`."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.before_stop: list[Callable[[], Awaitable[None]]] = []  # e.g. a load generator's stop
        self.load: LoadGenerator | None = None  # steady traffic a test may count

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.runtime.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            await self.runtime.stop()
            return
        self._started.set()
        await self.runtime.run(self._stop)
        for cleanup in self.before_stop:
            await cleanup()
        await self.runtime.stop()

    def start(self) -> RuntimeThread:
        self._thread.start()
        self._started.wait(240)
        if self._error is not None:
            raise self._error
        return self

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)


def http(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one request; errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def wait_for(condition: Callable[[], Any], within: float, what: str) -> Any:
    """The local runtime's pace: it ticks every second, so a quarter second between looks is plenty."""
    return eventually(condition, within, what, interval=0.25)
