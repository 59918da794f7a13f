"""JSON text from the handler's hot path: orjson where it writes what the standard library would, the standard
library where it does not.

Why: encoding answers and inference records took about a seventh of the handler's time per request (in-process,
one request at a time or eight, with inference logging on); orjson encodes several times faster. It refuses what
the standard library writes in its own way (integers beyond 64 bits, non-string keys): those go to the standard
library. Its text is compact (no space after ``:`` and ``,``) and may spell a number differently (``1e-5`` for
``1e-05``): the same values for any JSON reader. One difference stays: a non-finite float becomes ``null``, where
``json.dumps`` writes ``NaN``, which no JSON reader takes; answers never hold one (``EsteiraHandler`` refuses
non-finite outputs before it formats an answer).

Reading stays with the standard library: orjson reads an integer beyond 64 bits as a float, which would change a
logged request's values and what validation says of them.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """``value`` as JSON text."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a big integer, a non-string key: the standard library writes those
        return json.dumps(value)
