"""The serving targets' history reads every committed serving table from git, and the working tree's when it is new."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.history import RESULTS, UNCOMMITTED, committed_runs, markdown, trends

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def table(kserve: list[float], torchserve: list[float], cpu: str = "AMD EPYC") -> dict[str, Any]:
    """A serving table with esteira-kserve and TorchServe b8 at 32 callers, their runs alternated in one group."""

    def row(runs: list[float]) -> dict[str, Any]:
        point = {"rps": sorted(runs)[len(runs) // 2], "runs_rps": runs}
        return {"group": "kserve-vs-torchserve", "points": {"32": point}}

    return {"machine": {"cpu": cpu}, "rows": {"esteira-kserve": row(kserve), "ts-esteira-b8": row(torchserve)}}


def commit(repo: Path, content: str, subject: str) -> str:
    path = repo / RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    git(repo, "add", RESULTS)
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "--short", "HEAD").strip()


def repository(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    return tmp_path


def test_each_commit_of_the_table_is_a_run_newest_first(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    first = commit(repo, json.dumps(table([9000, 10000, 11000], [5000, 5000, 5000])), "first run")
    (repo / "other.txt").write_text("a change elsewhere")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "not a run")
    second = commit(repo, json.dumps(table([10000, 12000, 11000], [5000, 5000, 5000], cpu="Intel Xeon")), "second run")

    runs = committed_runs(repo)

    assert [(run.commit, run.subject, run.machine) for run in runs] == [
        (second, "second run", "Intel Xeon"),
        (first, "first run", "AMD EPYC"),
    ]


def test_the_working_tree_counts_as_a_run_only_when_it_differs(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    commit(repo, json.dumps(table([9000], [5000])), "committed run")
    assert len(committed_runs(repo)) == 1  # the working tree holds the committed table

    (repo / RESULTS).write_text(json.dumps(table([9000], [5000]), indent=2))  # the same table written again
    assert len(committed_runs(repo)) == 1

    (repo / RESULTS).write_text(json.dumps(table([12000], [5000])))

    runs = committed_runs(repo)
    assert runs[0].commit == UNCOMMITTED
    assert trends(runs)[0].values == (2.4, 1.8)


def test_a_commit_whose_file_is_not_a_table_is_skipped(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    good = commit(repo, json.dumps(table([9000], [5000])), "a run")
    commit(repo, "not json {", "a broken file")
    assert [run.commit for run in committed_runs(repo)] == [good]  # the working tree's broken file is no run either

    (repo / RESULTS).write_text(json.dumps(table([9000], [5000])))  # mended: the newest run's table, not a new one
    assert [run.commit for run in committed_runs(repo)] == [good]


def test_the_trend_counts_runs_that_met_the_target_and_reads_ratios_by_round(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    # Round by round: 2.0, 2.4, 2.2 (median 2.2), though the medians give 10000 / 5000 = 2.0.
    commit(repo, json.dumps(table([10000, 12000, 8800], [5000, 5000, 4000])), "met")
    commit(repo, json.dumps(table([9000, 9000, 9000], [5000, 5000, 5000])), "missed")

    text = markdown(committed_runs(repo))

    line = next(line for line in text.splitlines() if line.startswith("| esteira-kserve / TorchServe + Esteira b8 >="))
    assert line == "| esteira-kserve / TorchServe + Esteira b8 >= 2 | 32 | 1 of 2 | **1.80** | 2.00 | 2.20 | **1.80** |"
    assert "router / esteira-kserve" not in text  # no run measured it


def test_a_miss_that_rounds_to_the_target_shows_a_third_decimal(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    commit(repo, json.dumps(table([9990], [5000])), "just short")

    text = markdown(committed_runs(repo))

    line = next(line for line in text.splitlines() if line.startswith("| esteira-kserve / TorchServe + Esteira b8 >="))
    assert line.endswith("| 0 of 1 | **1.998** | **1.998** | **1.998** | **1.998** |")
