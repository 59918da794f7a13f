"""Esteira's model server as a pod runs it (entrypoint, front, TorchServe, handler) spoken to by real clients:
Triton's tritonclient and KServe's own REST client, plus raw HTTP for the routes neither client covers. Every
test runs against both runtimes: esteira-torchserve and esteira-kserve (the same handler on KServe's server), the
latter also in two worker processes."""

from __future__ import annotations

import base64
import functools
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.model_server import ModelServerProcess
from tests.support.prerequisites import require_file
from tests.support.protocol_clients import (
    check_tabular_with_triton,
    check_with_kserve_client,
    triton_client,
    triton_error,
)
from tests.support.torchserve import require_torchserve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("model-server-clients")]

MODELS = Path(__file__).resolve().parents[2] / "build" / "models"


def _config(build: str) -> dict[str, Any]:
    demo = MODELS.parent / "demo" / build / "esteira-model.json"
    return dict(json.loads(demo.read_text()))


RUNTIMES: dict[str, Callable[..., ModelServerProcess | KServeRuntimeProcess]] = {
    "esteira-torchserve": ModelServerProcess,
    "esteira-kserve": KServeRuntimeProcess,
    "esteira-kserve-2-workers": functools.partial(KServeRuntimeProcess, env={"ESTEIRA_WORKERS": "2"}),
}


@pytest.fixture(scope="module", params=list(RUNTIMES))
def servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ModelServerProcess | KServeRuntimeProcess]]:
    require_torchserve()
    for build in ("iris-1.0.0", "digits-1.0.0"):
        require_file(MODELS / build / "config" / "config.properties", "run `make models`")
    root = tmp_path_factory.mktemp("model-servers")
    runtime = RUNTIMES[request.param]
    with ExitStack() as stack:  # a server that fails to start stops those started before it
        started: dict[str, ModelServerProcess | KServeRuntimeProcess] = {}
        # One after the other (two JVMs starting at once crowd two cores), each made when it starts: its free port
        # is picked while the one before holds its own, which it might otherwise take.
        for name in ("iris", "digits"):
            started[name] = stack.enter_context(runtime(MODELS / f"{name}-1.0.0", root / name, "1.0.0"))
        yield started


def _get(
    url: str, method: str = "GET", body: bytes | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_tritonclient_speaks_v2_to_the_model_server(
    servers: dict[str, ModelServerProcess | KServeRuntimeProcess],
) -> None:
    check_tabular_with_triton(servers["iris"].url, "iris", "1.0.0", _config("iris-1.0.0")["labels"])


def test_kserve_client_speaks_v1_and_v2_to_the_model_server(
    servers: dict[str, ModelServerProcess | KServeRuntimeProcess],
) -> None:
    check_with_kserve_client(servers["iris"].url, "iris", _config("iris-1.0.0")["labels"])


def test_v1_listing_and_json_errors(servers: dict[str, ModelServerProcess | KServeRuntimeProcess]) -> None:
    url = servers["iris"].url
    assert _get(f"{url}/v1/models") == (200, {"models": ["iris"]})
    assert _get(f"{url}/v1/models/iris") == (200, {"name": "iris", "ready": True})
    status, body = _get(f"{url}/v1/models/other")
    assert status == 404 and "'other' is not served" in body["error"]
    status, body = _get(f"{url}/v1/models/iris:predict")
    assert status == 405 and "use POST" in body["error"]
    status, body = _get(f"{url}/v2/models/iris/stats")
    assert status == 404 and "no such endpoint" in body["error"]
    status, body = _get(f"{url}/v2/models/iris/infer", "POST", b"x" * 7_000_000)
    assert status == 413 and "exceeded" in body["error"]
    status, body = _get(f"{url}/predictions/nope", "POST", b"[]")  # TorchServe's own route, passed through
    assert status == 404 and body["error"]
    status, body = _get(f"{url}/v1/models/iris:predict", "POST", json.dumps({"instances": [[1, 2, 3]]}).encode())
    assert status == 400 and "instances[0]" in body["error"]


def _png(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), color=shade).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_as_binary_bytes_and_as_base64_agree(
    servers: dict[str, ModelServerProcess | KServeRuntimeProcess],
) -> None:
    client = triton_client(servers["digits"].url)
    config = _config("digits-1.0.0")
    metadata = client.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    k = min(config["top_k"], len(config["labels"]))
    assert [(o["name"], o["shape"]) for o in metadata["outputs"]] == [("labels", [-1, k]), ("scores", [-1, k])]
    images = [_png(0), _png(255)]
    raw = triton.InferInput("input-0", [2], "BYTES")
    raw.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    encoded = triton.InferInput("input-0", [2], "BYTES")
    encoded.set_data_from_numpy(
        np.array([base64.b64encode(image) for image in images], dtype=np.object_), binary_data=False
    )
    wanted = [triton.InferRequestedOutput("scores", binary_data=True)]
    from_raw = client.infer("digits", [raw], outputs=wanted).as_numpy("scores")
    from_text = client.infer("digits", [encoded], outputs=wanted).as_numpy("scores")
    assert from_raw.shape == (2, k)
    np.testing.assert_allclose(from_raw, from_text, rtol=1e-6)
    broken = triton.InferInput("input-0", [1], "BYTES")
    broken.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
    assert "undecodable image" in triton_error(lambda: client.infer("digits", [broken]))


def _post(url: str, body: bytes, content_type: str) -> tuple[int, Any]:
    return _get(url, "POST", body, content_type)


def test_an_image_reads_alike_in_every_form_torchserve_reads(
    servers: dict[str, ModelServerProcess | KServeRuntimeProcess],
) -> None:
    """Raw bytes, a multipart form (`curl -F data=@cat.png`), base64 text and a JSON string of base64 are one
    request in every runtime: TorchServe's frontend splits a form and its worker decodes JSON and text before the
    handler sees them, esteira-kserve hands over the HTTP body, and the handler reads both alike."""
    image = _png(255)
    encoded = base64.b64encode(image)
    boundary = "esteira-form-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="white.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    url = f"{servers['digits'].url}/v1/models/digits:predict"
    forms = {
        "raw bytes": (image, "application/octet-stream"),
        "multipart form": (form, f"multipart/form-data; boundary={boundary}"),
        "base64 text": (encoded, "text/plain"),
        "JSON string of base64": (b'"' + encoded + b'"', "application/json"),
    }
    answers = {name: _post(url, body, content_type) for name, (body, content_type) in forms.items()}
    assert answers["raw bytes"][0] == 200, answers["raw bytes"]
    assert all(answer == answers["raw bytes"] for answer in answers.values()), answers
    status, error = _post(url, b"\xff\xfe not text", "text/plain")
    assert status == 400 and "declared text but is not UTF-8" in error["error"]
