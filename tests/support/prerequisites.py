"""What a test needs from the machine (a tool, a built file, the upstream CRDs, a Python package), and the one
way to skip when it is absent.

Such skips carry a recognisable reason, so that with ``CI=true`` the hooks below turn them into failures: CI
installs everything, and a skip there would hide a broken install as a pass. Other skips (no GPU, a test that
only runs on the API emulator) stay skips everywhere. ``tests/conftest.py`` registers this module as a plugin.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Generator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
MISSING = "missing prerequisite: "
INSTALL_TOOLS = "run `make tools`"


def missing(what: str, how: str) -> str:
    """The skip reason for something absent, with how to get it."""
    return f"{MISSING}{what}; {how}"


def skip_missing(what: str, how: str) -> NoReturn:
    pytest.skip(missing(what, how), allow_module_level=True)


def find_tool(name: str) -> str | None:
    """``name`` on PATH, else the copy `hack/install-tools.sh` put in .tools/bin."""
    found = shutil.which(name)
    if found:
        return found
    local = TOOLS_BIN / name
    return str(local) if os.access(local, os.X_OK) else None


def require_tool(name: str, how: str = INSTALL_TOOLS) -> str:
    """The tool's path; skips the calling test, saying how to install it, when there is none."""
    found = find_tool(name)
    if found is None:
        skip_missing(f"`{name}` not on PATH or in {TOOLS_BIN}", how)
    return found


def require_module(name: str, how: str = "run `make install`") -> ModuleType:
    """``pytest.importorskip`` with a reason that CI turns into a failure."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        skip_missing(f"Python module {name} ({exc})", how)


def require_file(path: Path, how: str) -> Path:
    if not path.exists():
        skip_missing(f"{path}", how)
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _missing_reason(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return reason if reason.startswith(MISSING) else None


def _fail_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = _missing_reason(report)
    if reason is not None and in_ci():
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing prerequisite fails instead of skipping.\n{reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report() -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_in_ci(report)
    return report
