"""How a decision benchmark leaves its figures: a JSON file for the record, and aligned lines to read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
