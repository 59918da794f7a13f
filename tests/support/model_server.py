"""Esteira's model server as a pod runs it: ``python -m esteira.packaging.entrypoint`` on a packaged folder.

Every listener goes to a free loopback port through the same ``TS_*`` variables the ServingRuntime sets, so
the front, TorchServe behind it and the handler are the ones a cluster runs. The process gets SIGTERM at the
end, like a pod being stopped, and must take its whole process group down with it.
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path

from tests.support.pod_process import PodProcess
from tests.support.torchserve import free_port


class ModelServerProcess(PodProcess):
    """The entrypoint serving ``model_dir``; ``url`` is the front, where clients connect."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "esteira.packaging.entrypoint", "--model-dir", str(self.model_dir)]

    @cached_property
    def ports(self) -> list[int]:
        """The ports besides the front's, the same for every start."""
        return [free_port() for _ in range(6)]

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    @property
    def metrics_url(self) -> str:
        """The pod's metrics port: the front's, serving TorchServe's metrics with its own counts."""
        return f"http://127.0.0.1:{self.ports[2]}/metrics"

    def environment(self) -> dict[str, str]:
        ports = self.ports
        return {
            **super().environment(),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "ESTEIRA_RUNTIME_DIR": str(self.root / "runtime"),
            "ESTEIRA_BACKEND_ADDRESS": f"http://127.0.0.1:{ports[0]}",
            "ESTEIRA_BACKEND_METRICS_ADDRESS": f"http://127.0.0.1:{ports[5]}",
            "TS_INFERENCE_ADDRESS": self.url,
            "TS_MANAGEMENT_ADDRESS": self.management_url,
            "TS_METRICS_ADDRESS": self.metrics_url.removesuffix("/metrics"),
            "TS_GRPC_INFERENCE_PORT": str(ports[3]),
            "TS_GRPC_MANAGEMENT_PORT": str(ports[4]),
            "TS_OPEN_INFERENCE_PROTOCOL": "oip",
            "TS_DISABLE_TOKEN_AUTHORIZATION": "true",
        }
