"""Errors that name the offending field and the reason, for status conditions, events and CLI output."""

from __future__ import annotations

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
