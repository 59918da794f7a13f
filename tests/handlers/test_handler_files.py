"""TorchServe loads a handler file by instantiating the one class it defines (`ts.model_loader`
_get_class_entry_point refuses a module with two): each of Esteira's handler files must define exactly one."""

from __future__ import annotations

import ast

import pytest

import model_handlers


@pytest.mark.parametrize("kind", ["tabular", "image"])
def test_a_handler_file_defines_one_class(kind: str) -> None:
    tree = ast.parse(model_handlers.handler_file(kind).read_text())  # type: ignore[arg-type]
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert len(classes) == 1, f"{kind}: TorchServe would refuse {classes}"
