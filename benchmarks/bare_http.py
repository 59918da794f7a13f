"""The HTTP ceiling: uvicorn (uvloop, httptools) and Starlette answering every POST with a fixed JSON body.

Runs in the esteira-kserve environment (.tools/kserve-runtime-venv), whose HTTP stack KServe's server uses.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = (
    b'{"predictions": [{"label": "setosa", "probabilities": {"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05}}]}'
)


async def answer(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(routes=[Route("/{path:path}", answer, methods=["POST"]), Route("/ready", answer)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
