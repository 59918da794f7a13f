"""The esteira-kserve model server as a pod runs it: ``python -m model_handlers.kserve_server`` on a packaged
folder, in its own environment (.tools/kserve-runtime-venv, ``make kserve-runtime``)."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_handlers.metrics import ABANDONED_REQUESTS
from tests.support.pod_process import REPO, PodProcess
from tests.support.prerequisites import require_file

RUNTIME_PYTHON = REPO / ".tools" / "kserve-runtime-venv" / "bin" / "python"


class KServeRuntimeProcess(PodProcess):
    """esteira-kserve serving ``model_dir``; ``url`` is where clients connect (the same surface as the front)."""

    what = "esteira-kserve"
    log_name = "esteira-kserve.log"

    def __init__(
        self,
        model_dir: Path,
        root: Path,
        model_version: str,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        super().__init__(model_dir, root, model_version)
        self.env = dict(env or {})
        self.args = list(args)

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.env}

    def command(self) -> list[str]:
        command = [str(RUNTIME_PYTHON), "-m", "model_handlers.kserve_server", "--model-dir", str(self.model_dir)]
        return [*command, "--work-dir", str(self.root / "work"), "--http-port", str(self.port), *self.args]

    def start(self, within: float = 120.0) -> Self:
        require_file(RUNTIME_PYTHON, "run `make kserve-runtime`")
        return super().start(within)


def refusal_at_start(model_dir: Path, root: Path, env: Mapping[str, str]) -> str:
    """What esteira-kserve said as it refused to start with ``env`` (it must not become ready)."""
    server = KServeRuntimeProcess(model_dir, root, "1.0.0", env=env)
    with pytest.raises(RuntimeError, match="did not become ready") as refused:
        server.start(within=60)
    return str(refused.value)


def request_counts(metrics_url: str) -> dict[str, float]:
    """From a model server's metrics: the requests its model answered (the handler's ``ok`` count; a refusal is a
    server error) and those esteira-kserve left out because their callers had gone."""
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        exposition = answer.read().decode()
    counts = {"ok": 0.0, "abandoned": 0.0}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "esteira_requests_total" and sample.labels["outcome"] == "ok":
                counts["ok"] += sample.value
            elif sample.name == f"{ABANDONED_REQUESTS}_total":
                counts["abandoned"] += sample.value
    return counts
