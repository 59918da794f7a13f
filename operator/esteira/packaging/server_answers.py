"""Inference answers TorchServe makes itself, counted by the front so the canary analysis sees them.

The handler counts every request it answers in ``esteira_requests_total``; a request TorchServe refuses or fails
on its own never reaches it: its full queue's 503, no worker to serve (all of them dead or restarting), a worker
that died or ran past its response timeout. Those went only to TorchServe's ``Requests5XX``, per pod and without
the revision, so a canary failing that way looked healthy to an analysis reading the handler's counts. The
front sees every answer, tells TorchServe's own errors by their body (``{"code", "type", "message"}``; the
handler's are ``{"error": ...}``) and counts them, with its own 502 when TorchServe gave no answer at all, in
the same family with the handler's labels and ``answered_by="server"``. It serves them on the metrics port,
within TorchServe's exposition, so the scrape, the queries and the dashboards stay as they were: every sum over
a revision's requests or server errors now holds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qs

from model_handlers.metrics import REQUESTS_TOTAL, Outcome, label_value, outcome_slot
from model_handlers.protocol import Identity

ANSWERED_BY = "answered_by"
SERVER = "server"
# Only errors: every answer with a prediction is the handler's, and counted there.
_COUNTED = (Outcome.CLIENT_ERROR, Outcome.SERVER_ERROR)
_HELP = f"# HELP {REQUESTS_TOTAL} Requests by outcome: the handler's, and ({ANSWERED_BY}) the server's own errors"
_TYPE = f"# TYPE {REQUESTS_TOTAL} counter"


def made_by_server(status: int, body: bytes) -> bool:
    """Whether an error answer came from TorchServe itself rather than the handler (whose bodies hold ``error``)."""
    if status < 400:
        return False
    try:
        decoded = json.loads(body)
    except ValueError:
        return True
    return not (isinstance(decoded, Mapping) and "error" in decoded)


class ServerAnswers:
    """Counts, by outcome, of one model's error answers the handler did not make; written at 0 from the start,
    as the handler writes its own series when the model loads, so ``increase()`` sees the first one."""

    def __init__(self, identity: Identity, hostname: str) -> None:
        labels = (
            f'ModelName="{label_value(identity.name)}",Revision="{label_value(identity.revision)}",'
            f'Hostname="{_escaped(hostname)}",{ANSWERED_BY}="{SERVER}"'
        )
        self._prefixes = [f'{REQUESTS_TOTAL}{{{labels},outcome="{outcome}"}} ' for outcome in _COUNTED]
        self._counts = [0, 0]

    def record(self, status: int) -> None:
        """One error answer with this status (every ``ok`` is the handler's)."""
        if status >= 400:
            self._counts[outcome_slot(status) - 1] += 1

    def samples(self) -> list[str]:
        return [f"{prefix}{float(count)}" for prefix, count in zip(self._prefixes, self._counts, strict=True)]


def wanted(query: str) -> bool:
    """Whether a scrape with this query string asks for the family (TorchServe filters by ``name[]``)."""
    names = parse_qs(query).get("name[]")
    return not names or REQUESTS_TOTAL in names


def with_samples(exposition: str, samples: list[str]) -> str:
    """TorchServe's Prometheus text with ``samples`` of the requests family added: after that family's last
    sample where it has one (a family's samples stay together), else as a family of their own at the end."""
    lines = exposition.splitlines()
    family = REQUESTS_TOTAL + "{"
    last = max((i for i, line in enumerate(lines) if line.startswith(family)), default=None)
    if last is None:
        declared = _TYPE in lines
        at = lines.index(_TYPE) + 1 if declared else len(lines)
        lines[at:at] = samples if declared else [_HELP, _TYPE, *samples]
    else:
        lines[last + 1 : last + 1] = samples
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    """A label value in Prometheus' text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
