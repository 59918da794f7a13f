"""The serving targets across committed runs: every ratio of the serving table's targets as each committed run
of it measured them (results/serving-history.md).

Why: on this machine a row moves by a tenth to a fifth from round to round and by up to 3x over hours, so one
run's ratio within 10 % of its target settles nothing. Read over many runs, a miss is either the machine's spread
(met in some runs, missed in others) or a property of the code (missed in every run). A run is the
``benchmarks/results/serving.json`` of a commit that changed it, read from git, and the working tree's when it
differs from the newest committed one (a run not committed yet).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import RATIOS, ratio

REPO = Path(__file__).resolve().parents[1]
RESULTS = "benchmarks/results/serving.json"
OUTPUT = REPO / "benchmarks" / "results" / "serving-history.md"
RECENT = 10  # runs the trend is read over: enough to tell spread from a steady miss, recent enough to be this code
SUBJECT_CHARS = 110
UNCOMMITTED = "working tree"


@dataclass(frozen=True)
class Run:
    """One serving table: the commit that recorded it (``UNCOMMITTED`` for the working tree's), its date and
    subject, and its results as ``benchmarks.serving`` wrote them."""

    commit: str
    date: str
    subject: str
    results: dict[str, Any]

    @property
    def machine(self) -> str:
        return str(self.results.get("machine", {}).get("cpu", "?"))


@dataclass(frozen=True)
class Point:
    """One target at one concurrency: ``numerator``'s requests a second over ``denominator``'s, at least ``target``."""

    what: str
    numerator: str
    denominator: str
    concurrency: str
    target: float

    def measured(self, run: Run) -> float | None:
        return ratio(run.results.get("rows", {}), self.numerator, self.denominator, self.concurrency)


@dataclass(frozen=True)
class Trend:
    """What the runs that measured a point read, newest first (None where a run lacks one of its rows)."""

    point: Point
    values: tuple[float | None, ...]

    @property
    def measured(self) -> list[float]:
        return [value for value in self.values if value is not None]

    @property
    def met(self) -> int:
        return sum(value >= self.point.target for value in self.measured)


def points() -> list[Point]:
    """Every target of the serving table at each concurrency it is set for, in the table's order."""
    return [
        Point(what, numerator, denominator, concurrency, target)
        for what, numerator, denominator, concurrencies, target in RATIOS
        for concurrency in concurrencies
    ]


def trends(runs: Sequence[Run]) -> list[Trend]:
    """Each target point over ``runs`` (newest first); points no run measured are left out."""
    found = [Trend(point, tuple(point.measured(run) for run in runs)) for point in points()]
    return [trend for trend in found if trend.measured]


def committed_runs(repo: Path, path: str = RESULTS) -> list[Run]:
    """The serving tables committed in ``repo``, newest first, and the working tree's before them when it differs
    from the newest committed one. A commit whose file is not a serving table's JSON is skipped."""
    log = _git(repo, "log", "--format=%H%x1f%h%x1f%cs%x1f%s", "--", path)
    runs: list[Run] = []
    for line in log.splitlines():
        full, short, date, subject = line.split("\x1f", 3)
        try:
            results = json.loads(_git(repo, "show", f"{full}:{path}"))
        except (subprocess.CalledProcessError, json.JSONDecodeError):  # deleted or not JSON in that commit
            continue
        if isinstance(results, dict) and "rows" in results:
            runs.append(Run(short, date, subject, results))
    working = repo / path
    if working.exists():
        try:
            results = json.loads(working.read_text())
        except json.JSONDecodeError:
            return runs
        if isinstance(results, dict) and "rows" in results and (not runs or results != runs[0].results):
            runs.insert(0, Run(UNCOMMITTED, "", "not committed yet", results))
    return runs


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _cell(value: float | None, target: float) -> str:
    """Two decimals, bold for a miss; three where two would read as the target itself (0.949 against 0.95)."""
    if value is None:
        return ""
    if value >= target:
        return f"{value:.2f}"
    shown = f"{value:.2f}" if f"{value:.2f}" != f"{target:.2f}" else f"{value:.3f}"
    return f"**{shown}**"


def _subject(text: str) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= SUBJECT_CHARS else text[: SUBJECT_CHARS - 1].rstrip() + "…"


def markdown(runs: Sequence[Run], recent: int = RECENT) -> str:
    """The trend of every target over the ``recent`` newest runs, each of those runs' ratios, and what each run
    was; ``runs`` newest first."""
    shown = list(runs[:recent])
    found = trends(shown)
    source = f"every committed `{RESULTS}`"
    if shown and shown[0].commit == UNCOMMITTED:
        source += " and the working tree's"
    lines = [
        "# The serving targets across runs",
        "",
        f"Written by `python -m benchmarks.history` (part of `make bench`) from {source}. "
        f"Each ratio is read from its run as [serving.md](serving.md) reads it. Over the {len(shown)} newest of "
        f"{len(runs)} runs: how many met the target, and the lowest, median and highest ratio; bold, a miss.",
        "",
        "| target | c | met | lowest | median | highest | newest |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for trend in found:
        point, measured = trend.point, trend.measured
        newest = trend.values[0]
        lines.append(
            f"| {point.what} >= {point.target:g} | {point.concurrency} | {trend.met} of {len(measured)} | "
            f"{_cell(min(measured), point.target)} | {_cell(statistics.median(measured), point.target)} | "
            f"{_cell(max(measured), point.target)} | {_cell(newest, point.target)} |"
        )
    lines += [
        "",
        "## Each run's ratios",
        "",
        "Newest first; a blank where the run had no row for one side of the ratio.",
        "",
        "| target | c | " + " | ".join(f"`{run.commit}`" for run in shown) + " |",
        "| --- | --- | " + " | ".join("---" for _ in shown) + " |",
    ]
    for trend in found:
        point = trend.point
        cells = " | ".join(_cell(value, point.target) for value in trend.values)
        lines.append(f"| {point.what} | {point.concurrency} | {cells} |")
    lines += ["", "## The runs", "", "| run | date | machine | what the commit says |", "| --- | --- | --- | --- |"]
    lines += [f"| `{run.commit}` | {run.date} | {run.machine} | {_subject(run.subject)} |" for run in runs]
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--recent", type=int, default=RECENT, help=f"runs the trend is read over (default {RECENT})")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    runs = committed_runs(REPO)
    if not runs:
        raise SystemExit(f"no serving table found: run `python -m benchmarks.serving` first ({RESULTS})")
    args.output.write_text(markdown(runs, args.recent))
    print(f"wrote {args.output} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
