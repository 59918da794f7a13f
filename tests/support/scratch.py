"""A benchmark's or a helper's working folder: removed when the work in it succeeded, kept when it failed."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A new temporary folder for the block; kept, its path printed, when the block raises, so the logs the work
    wrote there (an operator's, a server's) can be read."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    except BaseException:
        print(f"kept for its logs: {work}", file=sys.stderr, flush=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
