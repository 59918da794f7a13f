"""Merge patches computed between two documents: applying the diff always gives the target."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from esteira.state import merge_patch

LEAVES = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3))
DOCS = st.recursive(
    st.dictionaries(st.text("abc", min_size=1, max_size=2), LEAVES, max_size=4),
    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=2), st.one_of(LEAVES, inner), max_size=4),
    max_leaves=12,
)


@given(DOCS, DOCS)
def test_diff_then_apply_gives_the_target(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert merge_patch.apply(before, merge_patch.diff(before, after)) == after


def test_removed_nested_keys_become_null() -> None:
    before = {"canary": {"revision": 2, "pauseReason": "x"}, "phase": "Progressing"}
    after = {"phase": "Ready", "stable": {"revision": 2}}
    assert merge_patch.diff(before, after) == {"canary": None, "phase": "Ready", "stable": {"revision": 2}}


def test_no_change_is_an_empty_patch() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    assert merge_patch.diff(doc, {"a": {"b": [1, 2]}, "c": 1}) == {}
