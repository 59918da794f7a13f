"""config.properties and model-config YAML builders, and the Java properties reader/editor they rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from esteira.packaging.config import (
    ModelSpec,
    ServerSpec,
    config_properties,
    model_config,
    model_config_yaml,
    model_snapshot,
    parse_properties,
    set_properties,
)

IRIS = ModelSpec(name="iris", version="1.0.0", batch_size=8, max_batch_delay_ms=5, min_workers=2, max_workers=3)


def snapshot_of(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(parse_properties(text)["model_snapshot"])
    return loaded


def test_model_config_yaml_carries_workers_and_batching() -> None:
    loaded = yaml.safe_load(model_config_yaml(IRIS))
    assert loaded == {
        "minWorkers": 2,
        "maxWorkers": 3,
        "batchSize": 8,
        "maxBatchDelay": 5,
        "responseTimeout": 120,
        "startupTimeout": 120,
        "maxRetryTimeoutInSec": 60,
    }
    assert "deviceType" not in loaded


def test_model_config_device_type_only_when_asked() -> None:
    assert model_config(ModelSpec("iris", "1", device_type="gpu"))["deviceType"] == "gpu"


def test_snapshot_entry_has_what_torchserve_requires() -> None:
    props = parse_properties(config_properties([IRIS]))
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["modelCount"] == 1
    entry = snapshot["models"]["iris"]["1.0.0"]
    # TorchServe's Model.setModelState reads these four without a default: a missing one fails start-up.
    for key in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay"):
        assert key in entry
    assert entry == {**entry, "marName": "iris.mar", "defaultVersion": True, "batchSize": 8, "maxBatchDelay": 5}
    assert entry["minWorkers"] == 2 and entry["maxWorkers"] == 3


def test_config_properties_kserve_layout_and_security_decisions() -> None:
    props = parse_properties(config_properties([IRIS]))
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["metrics_config"] == "/mnt/models/config/metrics.yaml"
    assert props["metrics_mode"] == "prometheus"
    assert props["enable_envvars_config"] == "true"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_model_api"] == "false"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["grpc_management_address"] == "127.0.0.1"
    # KServe's stock wrapper takes 8080 and forwards to TorchServe's inference address.
    assert props["inference_address"] == "http://0.0.0.0:8085"
    assert props["metrics_address"] == "http://0.0.0.0:8082"


def test_config_properties_without_metrics_config_and_elsewhere() -> None:
    server = ServerSpec(model_dir="/models/iris/", metrics_config=None)
    props = parse_properties(config_properties([IRIS], server))
    assert "metrics_config" not in props
    assert props["model_store"] == "/models/iris/model-store"


def test_snapshot_json_stays_on_one_line() -> None:
    text = config_properties([IRIS, ModelSpec("digits", "2.0")])
    (line,) = [line for line in text.splitlines() if line.startswith("model_snapshot=")]
    assert set(snapshot_of(text)["models"]) == {"iris", "digits"}
    assert "\\" not in line


def test_duplicate_model_names_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        model_snapshot([IRIS, ModelSpec("iris", "2.0.0")])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "iris/evil"}, "name"),
        ({"name": "-iris"}, "name"),
        ({"name": "Fraud_Model"}, "name 'Fraud_Model': a ModelDeployment's spec.model.name"),
        ({"name": "m" * 64}, "63 at most"),
        ({"version": "v" * 64}, "version"),
        ({"version": 'v1"'}, "version"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_batch_delay_ms": -1}, "max_batch_delay_ms"),
        ({"min_workers": 3, "max_workers": 2}, "workers"),
        ({"response_timeout_s": 0}, "response_timeout_s"),
    ],
)
def test_model_spec_rejects(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "iris", "version": "1.0.0"}
    with pytest.raises(ValueError, match=message):
        ModelSpec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_management_api_must_stay_on_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        ServerSpec(management_address="http://0.0.0.0:8081")
    with pytest.raises(ValueError, match="HOST:PORT"):
        ServerSpec(inference_address="0.0.0.0:8085")


# --- properties text ------------------------------------------------------------------------------


def test_parse_properties_java_forms() -> None:
    text = "\n".join(
        [
            "# comment = not a key",
            "! also a comment",
            "  a=1",
            "b : two words ",
            "c\tthree",
            "d=first \\",
            "   second",
            "e=back\\\\slash",
            "f=\\u0041\\tB",
            "a=override",
        ]
    )
    assert parse_properties(text) == {
        "a": "override",
        "b": "two words ",
        "c": "three",
        "d": "first second",
        "e": "back\\slash",
        "f": "A\tB",
    }


def test_set_properties_rewrites_in_place_and_appends() -> None:
    text = "# keep me\nx=1\ny=old \\\n  continued\nz=3\ny=again\n"
    out = set_properties(text, {"y": "new", "w": "added"})
    assert out == "# keep me\nx=1\ny=new\nz=3\nw=added\n"
    assert parse_properties(out) == {"x": "1", "y": "new", "z": "3", "w": "added"}


def test_set_properties_escapes_values_that_need_it() -> None:
    out = set_properties("", {"k": " lead\\back"})
    assert parse_properties(out) == {"k": " lead\\back"}


def test_packaging_imports_without_torch() -> None:
    """The operator image has no torch: packaging, the entrypoint and the runtime builder must not need it."""
    code = (
        "import sys\n"
        "for blocked in ('torch', 'ts', 'model_archiver', 'model_handlers', 'sklearn'):\n"
        "    sys.modules[blocked] = None\n"
        "import esteira.packaging, esteira.packaging.archive, esteira.packaging.cli\n"
        "import esteira.packaging.entrypoint, esteira.packaging.healthcheck, esteira.packaging.servingruntime\n"
        "from esteira.packaging.cli import default_metrics_config\n"
        "print(default_metrics_config())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
