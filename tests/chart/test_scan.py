"""Security scan of the chart (every values set in ``MATRIX``, as `helm template` renders it) and the Dockerfile
with checkov, offline.

No failed check may stand without a reason: the skipped checks in .checkov.yaml each carry one, a failure
that is not skipped there fails here, and so does a skip that no longer fails (a stale reason). checkov lives
in its own environment (.tools/checkov-venv, pinned in tests/chart/checkov-requirements.txt) because its
dependency pins clash with the project's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import MATRIX, REPO_ROOT, render
from tests.support.prerequisites import require_tool

CONFIG = REPO_ROOT / ".checkov.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PINNED = Path(__file__).resolve().parent / "checkov-requirements.txt"


def checkov() -> str:
    """$CHECKOV, else .tools/checkov-venv/bin/checkov, else checkov on PATH; skips the test when none exists."""
    for candidate in (os.environ.get("CHECKOV"), str(REPO_ROOT / ".tools" / "checkov-venv" / "bin" / "checkov")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return require_tool("checkov", "run `make tools` (it builds .tools/checkov-venv)")


def skipped_checks() -> dict[str, str]:
    """check id -> the reason written above it in .checkov.yaml."""
    text = CONFIG.read_text()
    configured = yaml.safe_load(text)["skip-check"]
    reasons: dict[str, str] = {}
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# "))
        elif match := re.fullmatch(r"- (CKV\w+)", stripped):
            reasons[match.group(1)] = " ".join(comment)
            comment = []
        else:
            comment = []
    assert sorted(reasons) == sorted(configured), "write each skipped check on its own `- CKV_...` line"
    return reasons


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every rendered values set as its own file, plus the Dockerfile."""
    folder = tmp_path_factory.mktemp("scan")
    for case, values in MATRIX.items():
        docs = [obj for obj in render(values)]
        (folder / f"chart-{case}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    shutil.copy(DOCKERFILE, folder / "Dockerfile")
    return folder


def run_checkov(folder: Path, *extra: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [checkov(), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json", *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode in (0, 1), f"checkov failed to run:\n{done.stderr[-3000:]}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, "both frameworks ran"
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, f"{report['check_type']}: files checkov could not parse"
        assert report["summary"]["passed"] > 0
    return reports


def failures(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for report in reports:
        for check in report["results"]["failed_checks"]:
            where = f"{check['resource']} ({Path(check['file_path']).name})"
            found.setdefault(check["check_id"], []).append(f"{check['check_name']}: {where}")
    return found


@pytest.mark.slow
@pytest.mark.xdist_group("checkov")
def test_every_failure_is_justified_and_every_skip_still_needed(scan_dir: Path) -> None:
    """All checks run (the skips switched off): the failures must be exactly the justified skips."""
    failed = failures(run_checkov(scan_dir, "--skip-check", "CKV_NONE"))
    justified = skipped_checks()
    unjustified = {check: where for check, where in failed.items() if check not in justified}
    assert not unjustified, "failed checks without a reason in .checkov.yaml:\n" + json.dumps(unjustified, indent=2)
    stale = sorted(set(justified) - set(failed))
    assert not stale, f"skipped in .checkov.yaml but passing now, drop them: {stale}"


@pytest.mark.slow
@pytest.mark.xdist_group("checkov")
def test_scan_with_the_config_passes(scan_dir: Path) -> None:
    """What `make scan` runs: with .checkov.yaml's skips nothing fails."""
    failed = failures(run_checkov(scan_dir))
    assert not failed, json.dumps(failed, indent=2)


def test_every_skip_has_a_reason() -> None:
    for check, reason in skipped_checks().items():
        assert reason.startswith(f"{check} ("), f"{check}: the comment above it starts with `{check} (what it checks)`"
        assert len(reason) > 80, f"{check}: say why it does not apply here, not just what it is"


def test_checkov_is_pinned() -> None:
    pins = dict(
        line.split("==") for line in PINNED.read_text().splitlines() if "==" in line and not line.startswith("#")
    )
    assert pins.get("checkov") == "3.3.30"


def test_dockerfile_base_images_are_pinned() -> None:
    """What CKV_DOCKER_7's skip leaves unchecked: every base image resolves to a versioned tag or a build stage."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))
    stages: set[str] = set()
    bases = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.MULTILINE)
    assert bases, "no FROM lines found"
    for image, stage in bases:
        resolved = image
        for _ in range(5):  # arguments may refer to other arguments
            resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), resolved)
        if resolved not in stages:
            assert "$" not in resolved, f"FROM {image}: no default for its build argument"
            name, _, tag = resolved.rpartition(":")
            assert (name and tag and tag != "latest") or "@sha256:" in resolved, (
                f"FROM {image} -> {resolved}: pin a tag"
            )
        if stage:
            stages.add(stage)
