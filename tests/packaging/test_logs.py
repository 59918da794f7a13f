"""TorchServe's logging in Esteira's model server: no access log, no per-request lines, files rolled by size."""

from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from esteira.packaging.entrypoint import log_config_file, torchserve_command, write_log_config
from esteira.packaging.logs import LOG_CONFIG_PATH, PER_REQUEST_LINES, log4j2_xml
from tests.support.model_server import ModelServerProcess
from tests.support.prerequisites import require_file
from tests.support.torchserve import require_torchserve

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"


def _loggers(xml: str) -> dict[str, ElementTree.Element]:
    tree = ElementTree.fromstring(xml)
    return {logger.get("name", "root"): logger for logger in tree.iter() if logger.tag in ("Logger", "Root")}


def test_access_log_is_off_and_every_file_rolls_by_size() -> None:
    xml = log4j2_xml(roll_at_mb=5, keep_files=2)
    loggers = _loggers(xml)
    assert loggers["ACCESS_LOG"].get("level") == "off"
    assert loggers["root"].get("level") == "warn"
    files = list(ElementTree.fromstring(xml).iter("RollingFile"))
    assert {f.get("name") for f in files} == {"ts_log", "model_log", "model_metrics", "ts_metrics"}
    for rolling in files:
        assert rolling.find("Policies/SizeBasedTriggeringPolicy").get("size") == "5 MB"  # type: ignore[union-attr]
        assert rolling.find("DefaultRolloverStrategy").get("max") == "2"  # type: ignore[union-attr]
    # The console (kubectl logs, esteira up's server log) gets warnings and errors only.
    for name in ("org.pytorch.serve", "MODEL_LOG"):
        console = [ref for ref in loggers[name].iter("AppenderRef") if ref.get("ref") == "STDOUT"]
        assert [ref.get("level") for ref in console] == ["warn"]


def test_log_config_rejects_no_rotation() -> None:
    with pytest.raises(ValueError, match="at least 1 MB"):
        log4j2_xml(roll_at_mb=0)


def test_the_model_folder_s_own_log_config_wins(tmp_path: Path) -> None:
    model_dir, runtime_dir = tmp_path / "model", tmp_path / "runtime"
    default = log_config_file(model_dir, runtime_dir)
    assert default == runtime_dir / "log4j2.xml"
    write_log_config(default, model_dir)
    assert default.read_text() == log4j2_xml()
    own = model_dir / LOG_CONFIG_PATH
    own.parent.mkdir(parents=True)
    own.write_text("<Configuration/>")
    assert log_config_file(model_dir, runtime_dir) == own
    write_log_config(own, model_dir)
    assert own.read_text() == "<Configuration/>"
    command = torchserve_command("/c.properties", "/store", log_config=str(own))
    assert f"--log-config={own}" in command


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchserve_behind_the_front_writes_no_line_per_request(tmp_path: Path) -> None:
    require_torchserve()
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
    with ModelServerProcess(IRIS, tmp_path, "1.0.0") as server:
        for _ in range(40):
            request = urllib.request.Request(
                f"{server.url}/v1/models/iris:predict", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
    logs = tmp_path / "runtime" / "logs"
    ts_log = (logs / "ts_log.log").read_text()
    assert "Model iris loaded" in ts_log, ts_log[-2000:]  # INFO from start-up is kept
    assert not (logs / "access_log.log").exists()  # TorchServe's own configuration creates it at start-up
    written = ts_log + (logs / "model_log.log").read_text() + server.log_path.read_text()
    for line in PER_REQUEST_LINES:
        assert line not in written
    assert "[INFO ]" not in server.log_path.read_text()  # the console has warnings and errors only
