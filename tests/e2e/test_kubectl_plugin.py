"""`kubectl esteira` against a running operator: pause, resume, abort, promote, rollback, status, history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from esteira.kubectl import format_history, main
from tests.emulator.cluster import KubeApi
from tests.support.cluster import Esteira, eventually, model_source
from tests.support.fake_kserve import FakeKServe
from tests.support.prerequisites import require_tool
from tests.support.specs import document, spec

pytestmark = pytest.mark.usefixtures("operator")


def plugin(api: KubeApi, namespace: str, *args: str) -> int:
    return main(["--kubeconfig", str(api.kubeconfig), "-n", namespace, *args])


def md(namespace: str, version: str) -> dict[str, Any]:
    body = spec(rollout={"steps": [20, 100], "interval": "1h"})
    body["model"] = {**body["model"], **model_source(version, f"s3://m/iris/{version}")}
    return document(body, namespace=namespace)


def status_of(esteira: Esteira, namespace: str) -> dict[str, Any]:
    return esteira.get_md(namespace, "iris").get("status") or {}


def with_canary(esteira: Esteira, namespace: str, version: str = "2") -> dict[str, Any]:
    esteira.patch_md(namespace, "iris", {"spec": {"model": md(namespace, version)["spec"]["model"]}})
    return eventually(
        lambda: (c := status_of(esteira, namespace).get("canary")) and c["weight"] == 20 and c,
        timeout=30,
        what="canary at 20%",
    )


def test_pause_resume_abort_and_full_promote(
    crds: KubeApi, esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace, "1"))
    eventually(lambda: status_of(esteira, kube_namespace).get("phase") == "Ready", timeout=30, what="ready")
    with_canary(esteira, kube_namespace)

    assert plugin(crds, kube_namespace, "pause", "iris") == 0
    eventually(lambda: status_of(esteira, kube_namespace)["canary"]["paused"], what="paused")
    assert status_of(esteira, kube_namespace)["phase"] == "Paused"
    assert plugin(crds, kube_namespace, "resume", "iris") == 0
    eventually(lambda: not status_of(esteira, kube_namespace)["canary"]["paused"], what="resumed")

    assert plugin(crds, kube_namespace, "abort", "iris") == 0
    last = eventually(lambda: status_of(esteira, kube_namespace).get("lastRollout"), what="aborted")
    assert last["outcome"] == "RolledBack" and last["reason"] == "aborted by request"
    assert status_of(esteira, kube_namespace)["stable"]["revision"] == 1

    with_canary(esteira, kube_namespace, "3")
    assert plugin(crds, kube_namespace, "promote", "--full", "iris") == 0
    eventually(lambda: status_of(esteira, kube_namespace)["stable"]["revision"] == 3, what="promoted")


def test_rollback_to_an_earlier_revision_and_history(
    crds: KubeApi,
    esteira: Esteira,
    kube_namespace: str,
    fake_kserve: FakeKServe | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace, "1"))
    eventually(lambda: status_of(esteira, kube_namespace).get("phase") == "Ready", timeout=30, what="ready")
    with_canary(esteira, kube_namespace)
    plugin(crds, kube_namespace, "promote", "--full", "iris")
    eventually(lambda: status_of(esteira, kube_namespace)["stable"]["revision"] == 2, what="revision 2 stable")

    assert plugin(crds, kube_namespace, "rollback", "--to-revision", "1", "iris") == 0
    stable = eventually(
        lambda: (s := status_of(esteira, kube_namespace)["stable"])["modelVersion"] == "1" and s,
        what="revision 1's build stable again",
    )
    assert stable["revision"] == 3  # a rollback is a new revision of the old build
    assert status_of(esteira, kube_namespace).get("canary") is None
    assert esteira.get_md(kube_namespace, "iris")["spec"]["model"]["version"] == "1"

    capsys.readouterr()
    assert plugin(crds, kube_namespace, "history", "iris") == 0
    printed = capsys.readouterr().out
    assert "rollback to the build of revision 1 by request" in printed
    assert printed == format_history(esteira.get_md(kube_namespace, "iris")) + "\n"
    with pytest.raises(SystemExit, match="revision 9 is not in the history"):
        plugin(crds, kube_namespace, "rollback", "--to-revision", "9", "iris")


def test_kubectl_finds_the_plugin_and_passes_its_flags_after_the_name(
    crds: KubeApi, esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    """The README's form, through kubectl itself: kubectl hands `-n` and `--kubeconfig` to the plugin as written."""
    kubectl = require_tool("kubectl")
    esteira.create_md(kube_namespace, md(kube_namespace, "1"))
    eventually(lambda: status_of(esteira, kube_namespace).get("phase") == "Ready", timeout=30, what="ready")
    plugin_dir = Path(sys.executable).parent  # where the package installed kubectl-esteira
    env = {**os.environ, "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    args = [kubectl, "esteira", "status", "iris", "-n", kube_namespace, "--kubeconfig", str(crds.kubeconfig)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{kube_namespace}/iris  phase: Ready"), done.stdout
