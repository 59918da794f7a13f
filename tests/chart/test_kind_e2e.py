"""`make kind-e2e` (hack/kind-e2e.sh) needs Docker and kind, so CI cannot run it; what it installs can be checked:
every image the chart would run is one the script builds and loads into the cluster (a kind node pulls nothing
tagged dev), and the end-to-end suite runs once on every ClusterServingRuntime the chart installs, so each runtime
a ModelDeployment may name has served on a real cluster whenever the script has run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import REPO_ROOT, Rendered, render

SCRIPT = REPO_ROOT / "hack" / "kind-e2e.sh"
DOCKERFILE = REPO_ROOT / "Dockerfile"


def assignments(script: str) -> dict[str, str]:
    """The script's plain top-level assignments (``NAME=value``), a trailing comment dropped."""
    found: dict[str, str] = {}
    for line in script.splitlines():
        matched = re.match(r"^([A-Z_]+)=(\S+)", line)
        if matched:
            found[matched[1]] = matched[2]
    return found


def expand(word: str, variables: dict[str, str]) -> str:
    """``word`` with ``$NAME`` / ``${NAME}`` replaced from ``variables`` (a KeyError names an unknown one)."""
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: variables[m[1]], word.strip('"'))


def commands(script: str, program: str) -> list[list[str]]:
    """Each invocation of ``program`` as words, its continuation lines joined."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith(program + " ")]


def loaded_images(script: str, variables: dict[str, str]) -> set[str]:
    """The images ``kind load docker-image`` gives the cluster."""
    (load,) = commands(script, "kind load")
    words = load[3 : load.index("--name")] if "--name" in load else load[3:]
    return {expand(word, variables) for word in words}


def runtimes_default(script: str) -> list[str]:
    matched = re.search(r"^RUNTIMES=\$\{KIND_E2E_RUNTIMES:-([^}]*)\}", script, re.MULTILINE)
    assert matched, "hack/kind-e2e.sh sets no RUNTIMES default"
    return matched[1].split()


def container_images(rendered: Rendered) -> dict[str, str]:
    """Every container's image in the rendered chart, with its pull policy."""
    images: dict[str, str] = {}
    for obj in rendered:
        spec: dict[str, Any] = obj.get("spec") or {}
        containers = spec.get("containers") or ((spec.get("template") or {}).get("spec") or {}).get("containers")
        for container in containers or []:
            images[container["image"]] = container.get("imagePullPolicy", "")
    return images


@pytest.fixture(scope="module")
def script() -> str:
    return SCRIPT.read_text()


@pytest.fixture(scope="module")
def variables(script: str) -> dict[str, str]:
    return assignments(script)


@pytest.fixture(scope="module")
def installed(script: str, variables: dict[str, str]) -> Rendered:
    """The chart as the script installs it: the values file it passes with -f, nothing else."""
    (install,) = [words for words in commands(script, "helm") if words[1:4] == ["upgrade", "--install", "esteira"]]
    assert not any(word == "--set" or word.startswith("--set=") for word in install), "values belong in the file"
    values = Path(REPO_ROOT / expand(install[install.index("-f") + 1], variables))
    return render(yaml.safe_load(values.read_text()))


def test_every_image_built_is_loaded_into_the_cluster(script: str, variables: dict[str, str]) -> None:
    built = {expand(words[words.index("-t") + 1], variables) for words in commands(script, "docker")}
    targets = {words[words.index("--target") + 1] for words in commands(script, "docker")}
    loaded = loaded_images(script, variables)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    assert built and built <= loaded, f"built but not loaded into kind: {sorted(built - loaded)}"
    assert targets <= stages, f"no such Dockerfile stage: {sorted(targets - stages)}"


def test_the_chart_runs_only_images_the_script_loads(
    script: str, variables: dict[str, str], installed: Rendered
) -> None:
    loaded = loaded_images(script, variables)
    images = container_images(installed)
    assert images, "the chart rendered no containers"
    assert set(images) <= loaded, f"the chart would pull what kind was not given: {sorted(set(images) - loaded)}"
    always = sorted(image for image, policy in images.items() if policy == "Always")
    assert not always, f"a kind node cannot pull these (imagePullPolicy Always): {always}"


def test_the_suite_runs_on_every_runtime_the_chart_installs(script: str, installed: Rendered) -> None:
    runtimes = {obj["metadata"]["name"] for obj in installed.of_kind("ClusterServingRuntime")}
    assert runtimes == set(runtimes_default(script))
    assert {"esteira-torchserve", "esteira-kserve"} <= runtimes
    loop = re.search(r"^for runtime in \$RUNTIMES; do\n(.*?)^done$", script, re.MULTILINE | re.DOTALL)
    assert loop and 'ESTEIRA_E2E_RUNTIME="$runtime"' in loop[1] and "pytest -m e2e tests/e2e" in loop[1]
