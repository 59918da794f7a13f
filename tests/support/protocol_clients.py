"""What a v1/v2 client sees of one served tabular model, shared by the model-server and the local-router tests:
Triton's ``tritonclient[http]`` in this environment, KServe's own client in .tools/kserve-client-venv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support.prerequisites import require_file

REPO = Path(__file__).resolve().parents[2]
KSERVE_PYTHON = REPO / ".tools" / "kserve-client-venv" / "bin" / "python"
KSERVE_SCRIPT = Path(__file__).resolve().parent / "kserve_client_check.py"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.5, 3.0, 5.5, 2.0]]


def triton_client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def infer(
    client: triton.InferenceServerClient,
    model: str,
    *,
    binary: bool,
    outputs: list[str] | None = None,
    version: str = "",
    name: str = "input-0",
) -> triton.InferResult:
    """Infer ROWS as FP32, with binary tensor data both ways or JSON both ways."""
    data = np.array(ROWS, dtype=np.float32)
    tensor = triton.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    requested = [triton.InferRequestedOutput(output, binary_data=binary) for output in outputs or []]
    return client.infer(model, [tensor], model_version=version, outputs=requested or None)


def triton_error(call: Any) -> str:
    """The message of the InferenceServerException that ``call`` must raise."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value)


def check_tabular_with_triton(url: str, model: str, version: str, labels: list[str]) -> None:
    """The whole v2 surface as tritonclient uses it, for a tabular classifier with ``labels``."""
    client = triton_client(url)
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert server["name"] == "esteira" and "binary_tensor_data" in server["extensions"]
    metadata = client.get_model_metadata(model)
    assert metadata == client.get_model_metadata(model, version)
    assert metadata["name"] == model and version in metadata["versions"]
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]},
    ]
    assert client.is_model_ready(model) and client.is_model_ready(model, version)
    assert not client.is_model_ready(model, version + "-other") and not client.is_model_ready(model + "-other")
    assert "no version" in triton_error(lambda: client.get_model_metadata(model, version + "-other"))

    as_json = infer(client, model, binary=False, outputs=["probabilities", "label"])
    as_binary = infer(client, model, binary=True, outputs=["probabilities", "label"], version=version)
    everything = infer(client, model, binary=True)  # no outputs named: tritonclient asks for binary outputs
    assert as_binary.get_response()["outputs"][0]["parameters"]["binary_data_size"] == len(ROWS) * len(labels) * 4
    assert "data" in as_json.get_response()["outputs"][0]
    for result in (as_binary, everything):
        np.testing.assert_allclose(result.as_numpy("probabilities"), as_json.as_numpy("probabilities"), rtol=1e-6)
        assert [x.decode() for x in result.as_numpy("label")] == list(as_json.as_numpy("label"))
    probabilities = as_json.as_numpy("probabilities")
    assert probabilities.shape == (len(ROWS), len(labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert list(as_json.as_numpy("label")) == [labels[int(i)] for i in probabilities.argmax(axis=1)]

    only = infer(client, model, binary=False, outputs=["label"]).get_response()["outputs"]
    assert [output["name"] for output in only] == ["label"]
    message = triton_error(lambda: infer(client, model, binary=False, outputs=["nope"]))
    assert "400" in message and "'nope'" in message and "probabilities" in message
    assert "no version" in triton_error(lambda: infer(client, model, binary=True, version=version + "-other"))


def check_with_kserve_client(url: str, model: str, labels: list[str]) -> None:
    """KServe's InferenceRESTClient (v1 and v2, binary on and off) against ``url``."""
    require_file(KSERVE_PYTHON, "run `make kserve-client` (KServe's SDK cannot share .venv: see its requirements)")
    done = subprocess.run(
        [str(KSERVE_PYTHON), str(KSERVE_SCRIPT), url, model, json.dumps(ROWS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["server_live"] and seen["server_ready"] and seen["model_ready"]
    assert seen["unknown_model_ready"] is False
    np.testing.assert_allclose(
        seen["infer_binary_false"]["probabilities"], seen["infer_binary_true"]["probabilities"], rtol=1e-6
    )
    assert len(seen["infer_binary_true"]["probabilities"]) == len(ROWS)
    assert seen["v1_server_live"] and seen["v1_model_ready"]
    predictions = seen["v1_predict"]["predictions"]
    assert [p["label"] for p in predictions] == [
        labels[int(np.argmax(row))] for row in seen["infer_binary_false"]["probabilities"]
    ]
