"""The local router against callers who should not command it, bodies that should not crash it, and backends
that vanish: no 5xx for a client's mistake, no internal address in an answer, no request lost to a dead arm."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from esteira.local.router import Router
from esteira.local.server import free_port
from esteira.local.split import Split
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER

TOKEN = "per-run-token"
JSON = {"Content-Type": "application/json"}
AUTH = {**JSON, "Authorization": f"Bearer {TOKEN}"}


async def _commanded(action: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"action": action, "args": args}


@asynccontextmanager
async def _router() -> AsyncIterator[Router]:
    router = Router("iris", free_port())
    router.token = TOKEN
    router.control = _commanded
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@asynccontextmanager
async def _backend(answer: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/models/iris:predict", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _post(url: str, data: bytes | str, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as answer:
        return answer.status, json.loads(await answer.read() or b"null")


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        (JSON, 401, "commands need this run's token"),
        ({**JSON, "Authorization": "Bearer wrong"}, 401, "commands need this run's token"),
        ({**AUTH, "Origin": "http://evil.example"}, 403, "cross-origin requests may not command"),
        ({**AUTH, "Host": "evil.example:8080"}, 403, "is not this machine's loopback"),
        ({"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}, 415, "Content-Type: application/json"),
    ],
)
def test_control_refuses_callers_without_the_token_or_from_elsewhere(
    headers: dict[str, str], status: int, message: str
) -> None:
    async def scenario() -> None:
        async with _router() as router:
            got, body = await _post(f"http://127.0.0.1:{router.port}/control/promote", "{}", headers)
            assert got == status and message in body["error"]
            got, body = await _post(f"http://127.0.0.1:{router.port}/control/promote", '{"full": true}', AUTH)
            assert got == 200 and body == {"action": "promote", "args": {"full": True}}

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "body", ["[" * 100_000 + "]" * 100_000, "[1, 2]", '"promote"', "12", "{", '{"a": ' * 5000 + "1" + "}" * 5000]
)
def test_control_answers_4xx_to_bodies_that_are_not_a_json_object(body: str) -> None:
    async def scenario() -> None:
        async with _router() as router:
            status, answer = await _post(f"http://127.0.0.1:{router.port}/control/promote", body, AUTH)
            assert 400 <= status < 500 and len(answer["error"]) < 300

    asyncio.run(scenario())


def test_a_dead_backend_is_retried_on_the_other_arm_and_its_address_is_never_shown() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"predictions": ["ok"]})

    async def scenario() -> None:
        async with _router() as router, _backend(ok) as alive:
            dead_port = free_port()
            router.set_backend(1, f"http://127.0.0.1:{dead_port}")
            router.set_backend(2, alive)
            router.set_split(Split(1, 2, 0), False)  # every request chooses the dead stable first
            url = f"http://127.0.0.1:{router.port}/v1/models/iris:predict"
            for _ in range(5):
                status, body = await _post(url, '{"instances": [[1, 2, 3, 4]]}', JSON)
                assert status == 200 and body == {"predictions": ["ok"]}
            # The attempt the dead one failed is its error (then it is out: not tried again), though 2 answered.
            assert router.arm(1).outcomes["server_error"] == 1 and sum(router.arm(1).outcomes.values()) == 1
            assert router.arm(2).outcomes["server_error"] == 0 and sum(router.arm(2).outcomes.values()) == 5
            router.set_split(Split(1), False)  # no other arm: the client gets a 502 that names no port
            router.set_backend(1, f"http://127.0.0.1:{dead_port}")
            router.retry_seconds = 0.5
            status, body = await _post(url + "?", '{"instances": [[1, 2, 3, 4]]}', {**JSON, "x-model-revision": "1"})
            assert status in (502, 503)
            assert str(dead_port) not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)

    asyncio.run(scenario())


def test_a_request_pinned_to_a_dead_revision_is_not_answered_by_another() -> None:
    """A pin (``x-model-revision``) is how a revision is tried on its own: the other arm's answer would pass for
    that revision's."""

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"predictions": ["from revision 2"]})

    async def scenario() -> None:
        async with _router() as router, _backend(ok) as alive:
            router.set_backend(1, f"http://127.0.0.1:{free_port()}")
            router.set_backend(2, alive)
            router.set_split(Split(1, 2, 50), False)
            router.retry_seconds = 0.5
            url = f"http://127.0.0.1:{router.port}/v1/models/iris:predict"
            status, body = await _post(url, '{"instances": [[1, 2, 3, 4]]}', {**JSON, "x-model-revision": "1"})
            assert status in (502, 503) and "revision 1" in body["error"], body
            status, body = await _post(url, '{"instances": [[1, 2, 3, 4]]}', {**JSON, "x-model-revision": "2"})
            assert (status, body) == (200, {"predictions": ["from revision 2"]})

    asyncio.run(scenario())


def test_a_request_is_retried_no_longer_than_its_caller_waits() -> None:
    """With no server to answer, the router waits for one up to ``retry_seconds``, but not past the deadline a
    proxy in front said: its caller has gone by then."""

    async def scenario() -> None:
        async with _router() as router:
            router.set_backend(1, None)
            router.set_split(Split(1), False)
            router.retry_seconds = 3600.0  # past the deadline, the wait below gives up long before this
            url = f"http://127.0.0.1:{router.port}/v1/models/iris:predict"
            asked = _post(url, '{"instances": [[1, 2, 3, 4]]}', {**JSON, EXPECTED_TIMEOUT_HEADER: "300"})
            status, body = await asyncio.wait_for(asked, 60)  # a deadline against a hang, not a measure of speed
            assert status == 503 and "not ready" in body["error"]

    asyncio.run(scenario())
