"""`esteira up` spoken to by real clients: tritonclient and KServe's REST client, then `/versions/<v>` routing to
the arm that serves that model version while a canary runs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from tests.local.conftest import RuntimeThread, http, need_torchserve, wait_for, write_manifest
from tests.support.protocol_clients import ROWS, check_tabular_with_triton, check_with_kserve_client

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local-clients")]
LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeThread]:
    need_torchserve()
    root = tmp_path_factory.mktemp("local-clients")
    manifest = root / "iris.yaml"
    write_manifest(manifest, "1.0.0", "iris-1.0.0")
    thread = RuntimeThread(LocalRuntime(manifest, port=free_port(), workdir=root / "run", log=print)).start()
    wait_for(lambda: http(f"{thread.runtime.url}/v2/models/iris/ready")[0] == 200, 120, "iris ready")
    yield thread
    thread.stop()


def test_tritonclient_speaks_v2_to_the_router(local: RuntimeThread) -> None:
    check_tabular_with_triton(local.runtime.url, "iris", "1.0.0", LABELS)


def test_kserve_client_speaks_v1_and_v2_to_the_router(local: RuntimeThread) -> None:
    check_with_kserve_client(local.runtime.url, "iris", LABELS)


def test_router_errors_are_json(local: RuntimeThread) -> None:
    url = local.runtime.url
    assert http(f"{url}/v1/models")[::2] == (200, {"models": ["iris"]})
    assert http(f"{url}/v1/models/iris")[::2] == (200, {"name": "iris", "ready": True})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"{url}/v1/models/iris:predict", method="GET"), timeout=10)
    assert refused.value.code == 405 and "use POST" in json.loads(refused.value.read())["error"]
    status, _, body = http(f"{url}/v2/models/iris/versions/9.9.9/infer", {"inputs": []})
    assert status == 404 and "no version '9.9.9'" in body["error"]
    status, _, body = http(f"{url}/v2/unknown")
    assert status == 404 and "no such endpoint" in body["error"]
    status, _, body = http(f"{url}/v2/models/other/ready")
    assert status == 404 and "'other' is not served" in body["error"]


def test_versions_route_to_the_arm_serving_them(local: RuntimeThread) -> None:
    runtime = local.runtime
    write_manifest(runtime.path, "1.1.0", "iris-1.1.0")
    wait_for(lambda: runtime.router.split and runtime.router.split.canary == 2, 120, "canary revision 2 serving")
    local.call(runtime.control("pause", {}))
    assert http(f"{runtime.url}/v2/models/iris")[2]["versions"] == ["1.0.0", "1.1.0"]
    v2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}
    for version, revision in (("1.0.0", "1"), ("1.1.0", "2")):
        assert http(f"{runtime.url}/v2/models/iris/versions/{version}/ready")[0] == 200
        for _ in range(5):
            status, headers, body = http(f"{runtime.url}/v2/models/iris/versions/{version}/infer", v2)
            assert status == 200 and headers["x-model-revision"] == revision
            assert body["model_version"] == version
    status, _, body = http(f"{runtime.url}/v2/models/iris/versions/1.0.0/infer", v2, {"x-model-revision": "2"})
    assert status == 404 and "does not serve version '1.0.0'" in body["error"]
