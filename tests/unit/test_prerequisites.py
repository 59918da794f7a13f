"""Missing prerequisites skip on a developer's machine and fail under CI=true; other skips stay skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.prerequisites import MISSING, find_tool, missing, require_file, require_tool

PLUGIN = "tests.support.prerequisites"

SAMPLE = """
import pytest
from tests.support.prerequisites import missing, require_module, require_tool

@pytest.fixture
def tool():
    return require_tool("no-such-tool-xyz")

def test_tool_in_body():
    require_tool("no-such-tool-xyz")

def test_tool_in_fixture(tool):
    pass

@pytest.mark.skipif(True, reason=missing("java", "install a JDK"))
def test_marker():
    pass

def test_module():
    require_module("no_such_module_xyz")

@pytest.mark.skipif(True, reason="no CUDA device: the GPU path runs only where one exists")
def test_gpu():
    pass

def test_plain_skip():
    pytest.skip("runs only against the API emulator")

def test_passes():
    pass
"""

MODULE_LEVEL = """
from tests.support.prerequisites import require_module

require_module("no_such_module_xyz")

def test_never_collected():
    pass
"""


@pytest.fixture(autouse=True)
def _quiet_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


@pytest.fixture
def sample(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_sample=SAMPLE)
    return pytester


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_outside_ci_missing_prerequisites_skip(
    sample: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CI", value)
    result = sample.runpytest("-p", PLUGIN, "-rs")
    result.assert_outcomes(passed=1, skipped=6)
    result.stdout.fnmatch_lines([f"*{MISSING}`no-such-tool-xyz` not on PATH*make tools*"])


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_in_ci_missing_prerequisites_fail(sample: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    result = sample.runpytest("-p", PLUGIN, "-rfEs")
    # A skip in a fixture or a skipif marker becomes a setup error; the GPU and emulator-only skips stay skips.
    result.assert_outcomes(passed=1, failed=2, errors=2, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*CI=true: a missing prerequisite fails instead of skipping.*",
            f"{MISSING}`no-such-tool-xyz` not on PATH*",
            "*SKIPPED*no CUDA device*",
            "*SKIPPED*runs only against the API emulator*",
        ]
    )
    assert "test_passes FAILED" not in result.stdout.str()


def test_in_ci_a_module_level_skip_fails_collection(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_module_level=MODULE_LEVEL)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest("-p", PLUGIN)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no_such_module_xyz*"])
    monkeypatch.setenv("CI", "false")
    pytester.runpytest("-p", PLUGIN).assert_outcomes(skipped=1)


def test_find_tool_looks_on_path_then_in_tools_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "esteira-probe-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert find_tool("esteira-probe-tool") == str(tool)
    assert require_tool("esteira-probe-tool") == str(tool)
    assert find_tool("esteira-no-such-tool") is None


def test_reasons_name_what_is_missing_and_how_to_get_it(tmp_path: Path) -> None:
    assert missing("helm", "run `make tools`") == f"{MISSING}helm; run `make tools`"
    with pytest.raises(pytest.skip.Exception, match=r"absent\.txt; run `make models`"):
        require_file(tmp_path / "absent.txt", "run `make models`")
    assert require_file(tmp_path, "unused") == tmp_path
