"""`esteira up`'s built-in collector: Esteira's collector on 127.0.0.1 with SQLite in the work folder.

The model servers log to it (when `spec.logging.mode` asks, and no other `url` is given), labels are posted to
it, and the accuracy check reads its store directly: no Prometheus and no database server needed.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from esteira.api.spec import ModelDeploymentSpec
from esteira.collector.app import Collector, CollectorConfig
from esteira.evidence.quality import TallyReader, store_tallies
from esteira.local.server import HOST, free_port
from esteira.render.inferenceservice import RenderContext, logging_env
from esteira.vocabulary import ENV_DEPLOYMENT


class BuiltInCollector:
    def __init__(self, folder: Path) -> None:
        self.collector = Collector(CollectorConfig(f"sqlite:///{folder / 'collector.db'}"))
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def tallies(self) -> TallyReader:
        return store_tallies(self.collector.store.tallies)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.collector.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def env(self, spec: ModelDeploymentSpec, namespace: str, name: str) -> dict[str, str]:
        """The model server's logging variables, as the operator would render them, sink defaulting to here."""
        ctx = RenderContext(name, namespace, collector_url=self.url)
        env = {item["name"]: item["value"] for item in logging_env(ctx, spec) if "value" in item}
        return {ENV_DEPLOYMENT: name, **env} if env else {}
