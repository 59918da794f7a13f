"""Who may command a local run: the holder of its per-run token, from this machine, not from a web page.

`esteira up` writes a fresh random token to a file only its user can read (in ``$XDG_RUNTIME_DIR``, else
``~/.local/state``), named by the router's port, and removes it on exit; the CLI reads it from there. The
router's ``/control/*`` wants that token as a bearer token, a ``Host`` naming loopback (no DNS rebinding),
no foreign ``Origin`` and a JSON body (a page's ``text/plain`` form post is refused before it runs anything).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from esteira.vocabulary import ENV_LOCAL_TOKEN, ENV_LOCAL_TOKEN_DIR

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def token_dir() -> Path:
    """Where tokens live: ``$ESTEIRA_LOCAL_TOKEN_DIR``, ``$XDG_RUNTIME_DIR/esteira``, or ``~/.local/state/esteira``."""
    if os.environ.get(ENV_LOCAL_TOKEN_DIR):
        return Path(os.environ[ENV_LOCAL_TOKEN_DIR])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "esteira" if runtime else Path.home() / ".local" / "state" / "esteira"


def token_path(port: int) -> Path:
    return token_dir() / f"control-{port}.token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def write_token(port: int, token: str) -> Path:
    """``token`` for the router on `port`, in a file readable by this user only (0600, folder 0700)."""
    folder = token_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = token_path(port)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return path


def remove_token(path: Path, token: str) -> None:
    """Remove the token file if it still holds our token (a newer run on the same port keeps its own)."""
    with contextlib.suppress(OSError):
        if path.read_text().strip() == token:
            path.unlink()


def read_token(url: str) -> str | None:
    """The token for the router at `url`: ``$ESTEIRA_LOCAL_TOKEN``, else the file named by its port."""
    if os.environ.get(ENV_LOCAL_TOKEN):
        return os.environ[ENV_LOCAL_TOKEN].strip()
    port = urlparse(url).port or 80
    try:
        return token_path(port).read_text().strip() or None
    except OSError:
        return None


def refusal(headers: dict[str, str], port: int, token: str | None) -> tuple[int, str] | None:
    """Why a control request may not run (status, message), or None when it may."""
    host = headers.get("host", "")
    if host.rpartition(":")[0] not in LOOPBACK_NAMES and host not in LOOPBACK_NAMES:
        return 403, f"Host {host[:100]!r} is not this machine's loopback; commands come from this machine only"
    origin = headers.get("origin")
    if origin is not None and origin not in {f"http://{name}:{port}" for name in LOOPBACK_NAMES}:
        return 403, "cross-origin requests may not command the local runtime"
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return 415, "a command's body must be JSON with Content-Type: application/json"
    if token is None:
        return None
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 401, (
            f"commands need this run's token (Authorization: Bearer ...); `esteira` reads it from {token_path(port)} "
            f"or ${ENV_LOCAL_TOKEN}"
        )
    return None
