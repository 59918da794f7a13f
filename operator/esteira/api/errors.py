"""Errors that name the offending field and the reason, for status conditions, events and CLI output."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldProblem:
    """One reason a spec is rejected: `path` is the dotted field path from the object root."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class InvalidSpec(ValueError):
    """A ModelDeployment spec that cannot be applied; carries every problem found."""

    def __init__(self, problems: Iterable[FieldProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, path: str, reason: str) -> InvalidSpec:
        return cls([FieldProblem(path, reason)])

    @classmethod
    def from_validation_error(cls, exc: ValidationError, root: str = "spec") -> InvalidSpec:
        problems = []
        for error in exc.errors(include_url=False):
            path = root
            for part in error["loc"]:
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(FieldProblem(path, message))
        return cls(problems)


def api_server_message(body: object, reason: object) -> str:
    """What the API server said of a refused call: its Status's message (it names the object, the verb, the
    admission policy), else the HTTP reason. The reason alone ("Not Found", "Forbidden") named neither the object
    nor the right that was missing."""
    try:
        status = json.loads(body) if isinstance(body, str | bytes | bytearray) else None
    except ValueError:
        status = None
    message = status.get("message") if isinstance(status, dict) else None
    return str(message) if isinstance(message, str) and message else str(reason or body or "no answer")
