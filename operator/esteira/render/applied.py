"""What Esteira last applied to a child object: the record it keeps in the object's own annotation."""

from __future__ import annotations

import json
from typing import Any

from esteira.vocabulary import ANNOTATION_LAST_APPLIED


def last_applied(actual: dict[str, Any]) -> dict[str, Any]:
    """The labels, annotations and spec Esteira last applied to ``actual`` ({} without a readable record)."""
    raw = ((actual.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_LAST_APPLIED)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
