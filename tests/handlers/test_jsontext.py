"""The handlers' JSON text reads back as the values it was made from, orjson or not."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from model_handlers import jsontext

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too: orjson refuses those
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # lone surrogates too: orjson refuses those
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=2)
    ),  # keys the standard library turns into strings
    max_leaves=20,
)


def same(left: Any, right: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, True is not 1)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)
    return bool(left == right)


@given(values)
def test_dumps_writes_what_the_standard_library_reads_as_its_own_text(value: Any) -> None:
    assert same(json.loads(jsontext.dumps(value)), json.loads(json.dumps(value)))


def test_values_orjson_refuses_are_written_by_the_standard_library() -> None:
    for value in ({"n": 2**70}, {1: "a"}, "\ud800"):
        assert jsontext.dumps(value) == json.dumps(value)
