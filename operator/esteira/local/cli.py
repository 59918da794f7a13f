"""`esteira up | status | promote | pause | resume | abort | retry | rollback`: a ModelDeployment on this machine.

`up` runs in the foreground until Ctrl-C or SIGTERM; the other commands talk to its router on loopback
(`--url`, default http://127.0.0.1:8080, or ESTEIRA_LOCAL_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

from esteira.api.errors import InvalidSpec
from esteira.drift.report import monitoring_lines
from esteira.local.access import read_token
from esteira.local.kserve_server import RuntimeUnavailable
from esteira.local.router import PortInUse
from esteira.local.runtime import LocalRuntime
from esteira.local.saved_state import StateFileError
from esteira.packaging.heap import freeze_startup_heap
from esteira.retraining.report import card_summary, retraining_lines
from esteira.vocabulary import ENV_KSERVE_PYTHON, ENV_LOCAL_URL

DEFAULT_URL = os.environ.get(ENV_LOCAL_URL, "http://127.0.0.1:8080")
CALL_TIMEOUT_SECONDS = 30.0


async def serve(runtime: LocalRuntime) -> int:
    """Start, run until a termination signal, stop cleanly; the exit status says how it went."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        starting = asyncio.create_task(runtime.start())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
        else:
            stopped.cancel()
            starting.result()
            runtime.say("Serving", f"POST {runtime.url}/v1/models/{runtime.spec.model.name}:predict; Ctrl-C stops")
            await runtime.run(stop)
    except PortInUse as exc:
        print(f"esteira up: {exc.strerror}", file=sys.stderr)
        runtime.discard_workdir()
        return 2
    except OSError as exc:  # the router could not listen there (another address error than a taken port)
        print(f"esteira up: cannot listen on port {runtime.port}: {exc.strerror or exc}", file=sys.stderr)
        await runtime.stop()
        runtime.discard_workdir()
        return 2
    except RuntimeError as exc:
        print(f"esteira up: {exc}", file=sys.stderr)
        await runtime.stop()
        return 1
    except Exception:  # unforeseen: its model servers run in sessions of their own, and outlived it unstopped
        traceback.print_exc()
        await runtime.stop()
        return 1
    await runtime.stop()
    return 0


def port(text: str) -> int:
    """A TCP port, 1-65535: an event loop took 70000 as 70000 % 65536 and listened elsewhere than it said."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return number


def router_url(text: str) -> str:
    """The URL of a running `esteira up`: http(s)://HOST[:PORT]; anything else ended in a traceback."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number or out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not a router URL such as http://127.0.0.1:8080")
    return text


def _up(args: argparse.Namespace) -> int:
    try:
        runtime = LocalRuntime(Path(args.file), port=args.port, workdir=args.workdir, kserve_python=args.kserve_python)
    except (RuntimeUnavailable, StateFileError) as exc:
        print(f"esteira up: {exc}", file=sys.stderr)
        return 2
    except InvalidSpec as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.file}: cannot read the file: {exc.strerror or exc}", file=sys.stderr)
        return 2
    freeze_startup_heap()  # the router's full collections would otherwise walk every module loaded so far
    return uvloop.run(serve(runtime))  # uvloop: a cheaper event loop under every request the router proxies


def call(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to a running `esteira up`; raises SystemExit with a readable message on failure."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    token = read_token(url)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method="GET" if body is None else "POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SECONDS) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"esteira: {_error_of(exc)}") from None
    except (TimeoutError, urllib.error.URLError) as exc:
        if not isinstance(getattr(exc, "reason", exc), TimeoutError):
            raise SystemExit(_no_runtime(url, exc)) from None
        # It may be carrying the command out still (a tick waiting on a slow Prometheus): sent again, a promote
        # moved two steps.
        raise SystemExit(
            f"esteira: {url} did not answer within {CALL_TIMEOUT_SECONDS:g}s; a command may still be carried out: "
            "see `esteira status` before sending it again"
        ) from None
    except OSError as exc:
        raise SystemExit(_no_runtime(url, exc)) from None


def _no_runtime(url: str, exc: BaseException) -> str:
    return (
        f"esteira: no local runtime answers at {url} ({getattr(exc, 'reason', exc)}); start one with "
        f"`esteira up -f md.yaml`, or point at a running one with --url or {ENV_LOCAL_URL}"
    )


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        decoded = json.loads(exc.read() or b"{}")
    except ValueError:
        decoded = {}
    return str(decoded.get("error", exc.reason)) if isinstance(decoded, dict) else str(exc.reason)


def render_status(view: dict[str, Any]) -> str:
    """Phase, weights, the canary's checks and the history, for a person."""
    status = view.get("status", {})
    lines = [f"{view.get('name')}: {view.get('phase')}   {view.get('url')}"]
    weights = ", ".join(f"revision {r}: {w}%" for r, w in view.get("weights", {}).items())
    lines.append(f"weights: {weights}")
    canary = status.get("canary")
    if canary:
        copies = canary.get("copies") == "Sending"
        where = "getting copies of stable's requests" if copies else f"step {canary['step'] + 1}"
        lines.append(
            f"canary revision {canary['revision']} (model {canary['modelVersion']}) {where}"
            f"{', paused' if canary.get('paused') else ''}{': ' + canary['pauseReason'] if canary.get('pauseReason') else ''}"
        )
        for check in canary.get("checks", []):
            lines.append(
                f"  {check['verdict']:<6} {check['name']} = {check.get('value')} ({check['threshold']}, n={check['sampleSize']})"
            )
    lines.append("history:")
    for entry in status.get("history", []):
        reason = f": {entry['reason']}" if entry.get("reason") else ""
        card = f" ({card_summary(entry.get('card'))})" if entry.get("card") else ""
        lines.append(f"  revision {entry['revision']} model {entry['modelVersion']}{card} {entry['outcome']}{reason}")
    lines += monitoring_lines(status.get("monitoring"))
    lines += retraining_lines(status.get("retraining"))
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    view = call(args.url, "/status")
    print(json.dumps(view, indent=2) if args.output == "json" else render_status(view))
    return 0


def _command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"full": bool(getattr(args, "full", False))}
    if getattr(args, "to_revision", None) is not None:
        body["revision"] = args.to_revision
    result = call(args.url, f"/control/{args.command}", body)
    for decision in result.get("decisions", []):
        print(f"{decision['reason']}: {decision['message']}")
    print(render_status(result.get("status", {})))
    return 0


def add_local_commands(subparsers: Any) -> None:
    """Register `up`, `status` and the rollout commands on the `esteira` parser."""
    up = subparsers.add_parser(
        "up", help="Run a ModelDeployment on this machine (a model server per revision, a router)."
    )
    up.add_argument("-f", "--file", required=True, help="ModelDeployment YAML; storageUri a folder or file:// URL")
    up.add_argument("--port", type=port, default=8080, help="Router port on 127.0.0.1. Default: 8080.")
    up.add_argument(
        "--workdir",
        type=Path,
        help="Where model servers keep config and logs, and the status a restart resumes from (status.json). "
        "Default: a temporary folder, removed at exit.",
    )
    up.add_argument(
        "--kserve-python",
        type=Path,
        help=f"The Python that runs spec.model.runtime esteira-kserve (imports kserve and model_handlers). Default: "
        f"${ENV_KSERVE_PYTHON}, else the repository's .tools/kserve-runtime-venv (`make kserve-runtime`).",
    )
    up.set_defaults(func=_up)

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(
            "--url", type=router_url, default=DEFAULT_URL, help=f"The local router. Default: {DEFAULT_URL}."
        )
        return parser

    status = client("status", "Phase, weights, checks and history of the local run.")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.set_defaults(func=_status)
    promote = client("promote", "Move the local canary to its next step (--full: make it stable now).")
    promote.add_argument("--full", action="store_true")
    promote.set_defaults(func=_command, command="promote")
    for name, text in (
        ("pause", "Hold the local canary at its weight."),
        ("resume", "Continue a paused local rollout."),
        ("abort", "Roll the local canary back now."),
        ("retry", "Try a rolled-back build again."),
    ):
        client(name, text).set_defaults(func=_command, command=name)
    rollback = client("rollback", "Make an earlier revision's build stable at once (until the file changes).")
    rollback.add_argument("--to-revision", type=int, required=True)
    rollback.set_defaults(func=_command, command="rollback")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esteira", description="Run a ModelDeployment on this machine.")
    add_local_commands(parser.add_subparsers(dest="subcommand", required=True))
    args = parser.parse_args(argv)
    return run_quietly_into_a_pipe(args)


def run_quietly_into_a_pipe(args: argparse.Namespace) -> int:
    """Run a command; a reader that stops early (`| head`) ends it quietly, as it does any Unix tool."""
    try:
        return int(args.func(args))
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
