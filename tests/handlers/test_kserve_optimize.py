"""esteira-kserve serving a model packaged with ``"optimize": true``: the load-time verdict reaches the server's
log (KServe's loggers keep to their own handlers, so the handler's lines need the root logger), and the
predictions are the model's."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.support.demo_package import DEMO, package_demo
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.prerequisites import require_file
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

INSTANCE = [5.1, 3.5, 1.4, 0.2]


def _predict(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/v1/models/iris:predict",
        json.dumps({"instances": [INSTANCE]}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        prediction: dict[str, object] = json.loads(answer.read())["predictions"][0]
    return prediction


def _logged_ready(log_path: Path) -> str | None:
    """The server's log once it holds the handler's ready line."""
    text = log_path.read_text()
    return text if "handler ready: model iris" in text else None


def test_the_optimize_verdict_is_logged_and_the_answers_are_the_models(tmp_path: Path) -> None:
    require_file(DEMO / "iris-1.0.0" / "model.pt", "run `make models`")
    answers = {}
    for optimize in (False, True):
        with KServeRuntimeProcess(
            package_demo("iris-1.0.0", tmp_path / f"packaged-{optimize}", optimize=optimize),
            tmp_path / f"run-{optimize}",
            "1.0.0",
        ) as server:
            answers[optimize] = _predict(server.url)
            log = eventually(lambda s=server: _logged_ready(s.log_path), what="the handler's ready line in its log")
            verdicts = [line for line in log.splitlines() if "optimize is set in" in line]
        if optimize:
            assert len(verdicts) == 1 and "faster on example inputs: 1 instance: " in verdicts[0], verdicts
        else:
            assert verdicts == []
    assert answers[True]["label"] == answers[False]["label"] == "setosa"
    optimized, as_loaded = answers[True]["probabilities"], answers[False]["probabilities"]
    assert isinstance(optimized, dict) and isinstance(as_loaded, dict)
    assert optimized == pytest.approx(as_loaded, abs=1e-6)
