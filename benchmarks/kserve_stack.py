"""esteira-kserve with its model handler replaced by a fixed answer: what the server stack costs alone.

Everything a request crosses but the handler runs as in production (KServe's ``ModelServer``, uvicorn on uvloop,
Esteira's inference routes and the adaptive batcher); ``InProcessHandler.run`` answers every request of a batch
with the same small document. Beside the ``esteira-kserve`` row it splits a request's time between the server
and the handler. Runs in .tools/kserve-runtime-venv; takes esteira-kserve's own arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from model_handlers import kserve_server
from model_handlers.inprocess import InProcessHandler
from model_handlers.messages import Answer, RawRequest

FIXED = Answer(200, b'{"predictions": [[0.1, 0.2, 0.7]]}', {"Content-Type": "application/json"})


def fixed_answers(_: InProcessHandler, requests: Sequence[RawRequest]) -> list[Answer]:
    return [FIXED] * len(requests)


def main() -> None:
    InProcessHandler.run = fixed_answers  # type: ignore[method-assign]
    kserve_server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
