#!/usr/bin/env python3
"""Writes the values table of charts/esteira/README.md from the `# --` comments in values.yaml.

Why generated: the table then always lists every value with its real default. A `# --` comment (continued
by the `#` lines right after it) describes the key below it; every key whose value is not a mapping of
further keys must have one, so an undocumented value fails here. Only the part of README.md between the
`<!-- values:start -->` and `<!-- values:end -->` markers is rewritten.

    python hack/chart-readme.py           # rewrite the table
    python hack/chart-readme.py --check   # exit 1 when the table is out of date (CI, tests/chart)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "esteira"
START, END = "<!-- values:start -->", "<!-- values:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?:\s|$)")


@dataclass(frozen=True)
class Value:
    path: str  # dotted, e.g. "image.tag"
    default: Any
    description: str


def _lookup(values: dict[str, Any], path: list[str]) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def parse_values(text: str) -> list[Value]:
    """Every documented key, in file order; raises ValueError for a leaf key without a `# --` comment."""
    values = yaml.safe_load(text)
    documented: list[Value] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment is not None:
            comment.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            if stripped and not stripped.startswith("#") and not stripped.startswith("-"):
                comment = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [key for _, key in stack] + [match["key"]]
        default = _lookup(values, path)
        nested = isinstance(default, dict) and bool(default)
        if comment is not None:
            documented.append(Value(".".join(path), default, " ".join(comment)))
        elif not nested and not any(v.path == ".".join(path[:n]) for v in documented for n in range(1, len(path))):
            raise ValueError(f"values.yaml:{number}: {'.'.join(path)} has no `# --` description")
        comment = None
        if nested:
            stack.append((indent, match["key"]))
    return documented


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)


def render_table(values: list[Value]) -> str:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for value in values:
        default = json.dumps(value.default, separators=(", ", ": "))
        description = value.description.replace("|", "\\|")
        rows.append(f"| `{value.path}` | {_type(value.default)} | `{default}` | {description} |")
    return "\n".join(rows)


def updated_readme(readme: str, table: str) -> str:
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md lacks the {START} ... {END} markers")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail instead of writing when the table is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    table = render_table(parse_values((args.chart / "values.yaml").read_text()))
    current = readme_path.read_text()
    wanted = updated_readme(current, table)
    if current == wanted:
        return 0
    if args.check:
        print(f"{readme_path} is out of date: run python hack/chart-readme.py", file=sys.stderr)
        return 1
    readme_path.write_text(wanted)
    print(f"wrote {readme_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
