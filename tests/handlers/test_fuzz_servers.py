"""Generated bodies against the servers clients reach: the model server's front with TorchServe behind it, and
`esteira up`'s router. Whatever a client sends, the answer is 200 or a 4xx with a short JSON error, never a
5xx: server errors count against a revision in canary analysis, so a client must not be able to cause them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from tests.local.conftest import RuntimeThread
from tests.support.model_server import ModelServerProcess
from tests.support.prerequisites import require_file
from tests.support.torchserve import require_torchserve

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local")]

MODELS = Path(__file__).resolve().parents[2] / "build" / "models"
SHORT_ERROR = 2048  # bytes: an error names what was wrong, it does not echo what was sent
MANIFEST = """\
apiVersion: serving.esteira.io/v1alpha1
kind: ModelDeployment
metadata: {{name: {model}}}
spec:
  model: {{name: {model}, version: "1.0.0", storageUri: "{folder}"}}
"""

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([3.4e38, -3.4e38, 1e308])
    | st.text(max_size=12)
)
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5),
    max_leaves=25,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.text(max_size=4),
        "shape": st.lists(st.integers(-1, 70_000), max_size=4),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "UINT8", "X"]),
        "data": st.lists(scalars | st.lists(scalars, max_size=4), max_size=16),
    },
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "content_type"]), scalars)},
)
shaped = st.one_of(
    st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2)}),
    st.fixed_dictionaries({"instances": st.lists(st.lists(scalars, max_size=5) | scalars, max_size=8)}),
    st.fixed_dictionaries({"instances": st.lists(nested, max_size=3)}),
)
# What no generator above reaches: deep nesting, numbers of thousands of digits, keys of 100 KB.
extremes = st.sampled_from(
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"instances": [[' + b"9" * 6000 + b", 1, 2, 3]]}",
        b'{"instances": [[3.4e38, 3.4e38, 3.4e38, 3.4e38]]}',
        b'{"' + b"k" * 100_000 + b'": 1}',
        b'{"inputs": [{"name": "' + b"n" * 100_000 + b'", "shape": [1], "datatype": "FP32", "data": [1]}]}',
        b'{"instances": "' + b"x" * 200_000 + b'"}',
    ]
)
bodies = st.one_of(
    st.binary(max_size=300),
    nested.map(lambda value: json.dumps(value).encode()),
    shaped.map(lambda value: json.dumps(value).encode()),
    extremes,
)
headers = st.fixed_dictionaries(
    {"Content-Type": st.sampled_from(["application/json", "application/octet-stream", "text/plain", ""])},
    optional={"Inference-Header-Content-Length": st.sampled_from(["0", "5", "-1", "99999999", "x", "2"])},
)


def post(url: str, body: bytes, head: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={k: v for k, v in head.items() if v})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def assert_never_5xx(base: str, model: str) -> None:
    """Both protocols; fails on the first 5xx or on a 4xx whose body is not a short JSON error."""
    routes = [f"{base}/v1/models/{model}:predict", f"{base}/v2/models/{model}/infer"]
    seen: set[int] = set()

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(route=st.sampled_from(routes), body=bodies, head=headers)
    def answers_4xx_never_5xx(route: str, body: bytes, head: dict[str, str]) -> None:
        status, text = post(route, body, head)
        seen.add(status)
        assert status < 500, f"{status} for {body[:200]!r} {head}: {text[:300]!r}"
        if status >= 400:
            assert len(text) <= SHORT_ERROR, f"{status}: a {len(text)}-byte error body"
            assert json.loads(text)["error"]

    answers_4xx_never_5xx()
    assert any(400 <= status < 500 for status in seen), seen


def _front(model: str, root: Path) -> Iterator[str]:
    with ModelServerProcess(MODELS / f"{model}-1.0.0", root, "1.0.0") as server:
        yield server.url


def _esteira_up(model: str, root: Path) -> Iterator[str]:
    manifest = root / f"{model}.yaml"
    manifest.write_text(MANIFEST.format(model=model, folder=MODELS / f"{model}-1.0.0"))
    thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=root / "run", log=lambda _: None))
    thread.start()
    try:
        yield thread.runtime.url
    finally:
        thread.stop()


TARGETS: dict[str, Callable[[str, Path], Iterator[str]]] = {"front": _front, "esteira-up": _esteira_up}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("model", ["iris", "digits"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_generated_bodies_get_200_or_a_short_4xx(target: str, model: str, tmp_path: Path) -> None:
    require_torchserve()
    require_file(MODELS / f"{model}-1.0.0" / "config" / "config.properties", "run `make models`")
    for base in TARGETS[target](model, tmp_path):
        assert_never_5xx(base, model)
