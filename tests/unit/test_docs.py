"""The project's Markdown points at what exists: every local link (and its anchor), and every repository path
written in backticks. Docs move when code moves; a stale path sends a reader nowhere. Every Kubernetes object
they show is valid, as a reader would apply it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.prerequisites import REPO_ROOT
from tests.support.schemas import validate_manifest

# Paths the docs name that are not in the repository, and why.
NOT_IN_THE_REPOSITORY = {
    "build/iris/config/config.properties": "what the README's `esteira package` example writes",
    "config/log4j2.xml": "a file of a packaged model's folder",
    "pkg/apis/serving/v1beta1/": "KServe's source tree, which the emulator cites",
}
# Where a path in backticks may start: the repository, the operator's source and its package (the docs name
# modules as `rollout/cycle.py`), or the folder of the document itself.
ROOTS = (REPO_ROOT, REPO_ROOT / "operator", REPO_ROOT / "operator" / "esteira")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH = re.compile(r"`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*)`")
FILE_LIKE = re.compile(r"(\.(py|md|json|ya?ml|sh|txt|lua|properties|xml|toml)|/)$")


def documents() -> list[Path]:
    """The Markdown the project writes by hand (benchmark results are generated)."""
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [REPO_ROOT / name for name in listed.stdout.split() if not name.startswith("benchmarks/results/")]


def anchors(document: Path) -> set[str]:
    """GitHub's anchors for the document's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+\s+(.+)$", document.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def local_links(document: Path) -> list[str]:
    """Links outside code (a regular expression in backticks can look like one), other than URLs."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", document.read_text(), flags=re.DOTALL)
    return [target for target in LINK.findall(prose) if not re.match(r"[a-z]+:", target)]


def named_paths(document: Path) -> list[str]:
    return [path for path in PATH.findall(document.read_text()) if FILE_LIKE.search(path)]


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_links_reach_a_file_and_a_heading(document: Path) -> None:
    for target in local_links(document):
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        assert linked.exists(), f"{document.relative_to(REPO_ROOT)} links to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document.relative_to(REPO_ROOT)} links to {target}: no such heading"


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_named_paths_exist(document: Path) -> None:
    for path in named_paths(document):
        if path in NOT_IN_THE_REPOSITORY:
            continue
        found = [root / path for root in (*ROOTS, document.parent) if (root / path).exists()]
        assert found, f"{document.relative_to(REPO_ROOT)} names `{path}`, which is nowhere in the repository"


def test_a_stale_path_and_a_broken_anchor_are_found(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text("# Usage\n\nSee `operator/esteira/gone.py`, `[a](b)`, [usage](#usage) and [x](#nowhere).\n")
    assert named_paths(document) == ["operator/esteira/gone.py"]
    assert not any((root / "operator/esteira/gone.py").exists() for root in ROOTS)
    assert "usage" in anchors(document)
    assert "nowhere" not in anchors(document)
    assert local_links(document) == ["#usage", "#nowhere"]


YAML_BLOCK = re.compile(r"^( *)```ya?ml\n(.*?)^\1```", re.DOTALL | re.MULTILINE)


def shown_objects(document: Path) -> list[dict[str, object]]:
    """The Kubernetes objects (documents with apiVersion and kind) in the document's YAML blocks."""
    found = []
    for block in YAML_BLOCK.finditer(document.read_text()):
        indent = len(block.group(1))
        text = "\n".join(line[indent:] for line in block.group(2).splitlines())
        found += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and "apiVersion" in d and "kind" in d]
    return found


def test_the_readme_s_objects_are_valid() -> None:
    objects = shown_objects(REPO_ROOT / "README.md")
    assert {o["kind"] for o in objects} >= {"ModelDeployment", "Role"}, "the blocks this test is for are found"
    for obj in objects:
        validate_manifest(obj)


def test_an_invalid_object_in_a_block_is_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text(
        "Apply:\n\n  ```yaml\n  apiVersion: rbac.authorization.k8s.io/v1\n  kind: Role\n  metadata: {name: r}\n"
        "  rules: [{apiGroups: [''], resource: [pods], verbs: [get]}]\n  ```\n"
    )
    (obj,) = shown_objects(bad)
    with pytest.raises(Exception, match="resource"):
        validate_manifest(obj)
