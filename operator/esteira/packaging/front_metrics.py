"""What the pod's front adds to TorchServe's metrics: the errors TorchServe answered itself, and each request's
time in the model server.

The handler counts every request it answers in ``esteira_requests_total``; a request TorchServe refuses or fails
on its own never reaches it: its full queue's 503, no worker to serve (all of them dead or restarting), a worker
that died or ran past its response timeout. Those went only to TorchServe's ``Requests5XX``, per pod and without
the revision, so a canary failing that way looked healthy to an analysis reading the handler's counts. The front
sees every answer on the paths that run the model (v1, v2 and TorchServe's ``/predictions``), tells TorchServe's own errors by their body (``{"code", "type",
"message"}``; the handler's are ``{"error": ...}``) and counts them, with its own 502 when TorchServe gave no
answer at all, in the same family with the handler's labels and ``answered_by="server"``.

The handler's duration histogram is its own time for a batch; what TorchServe's queue and batch delay add is out
of its sight. The front times each request from when it has the request to when TorchServe's answer is back, in
``esteira_server_request_duration_seconds``, the family esteira-kserve observes for the same span.

Where the front holds the requests TorchServe cannot start soon (:mod:`esteira.packaging.admission`), those it
dropped because their callers left are counted in ``esteira_abandoned_requests_total``, as esteira-kserve counts
its own.

All are served on the metrics port within TorchServe's exposition, so the scrape stays as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs

from esteira.packaging.exposition import bucket_of, histogram_lines, label_text
from esteira.vocabulary import series_label
from model_handlers.metrics import (
    ABANDONED_REQUESTS,
    ABANDONED_REQUESTS_HELP,
    REQUESTS_TOTAL,
    SERVER_DURATION_BUCKETS,
    SERVER_REQUEST_DURATION,
    SERVER_REQUEST_DURATION_HELP,
    Outcome,
    outcome_slot,
)
from model_handlers.protocol import Identity

ANSWERED_BY = "answered_by"
SERVER = "server"
# Only errors: every answer with a prediction is the handler's, and counted there.
_COUNTED = (Outcome.CLIENT_ERROR, Outcome.SERVER_ERROR)
_REQUESTS_HELP = f"# HELP {REQUESTS_TOTAL} Requests by outcome: the handler's, and ({ANSWERED_BY}) the server's errors"
_REQUESTS_TYPE = f"# TYPE {REQUESTS_TOTAL} counter"


def made_by_server(status: int, body: bytes) -> bool:
    """Whether an error answer came from TorchServe itself rather than the handler (whose bodies hold ``error``)."""
    if status < 400:
        return False
    try:
        decoded = json.loads(body)
    except ValueError:
        return True
    return not (isinstance(decoded, Mapping) and "error" in decoded)


def model_labels(identity: Identity, hostname: str) -> str:
    """The labels the handler's series carry under TorchServe, in Prometheus' text format."""
    # Quoted as the text format wants too: a quote or backslash in a free-form revision broke the whole scrape.
    name, revision = label_text(series_label(identity.name)), label_text(series_label(identity.revision))
    return f'ModelName="{name}",Revision="{revision}",Hostname="{label_text(hostname)}"'


class ServerAnswers:
    """Counts, by outcome, of one model's error answers the handler did not make; written at 0 from the start,
    as the handler writes its own series when the model loads, so ``increase()`` sees the first one."""

    def __init__(self, labels: str) -> None:
        self._prefixes = [f'{REQUESTS_TOTAL}{{{labels},{ANSWERED_BY}="{SERVER}",outcome="{o}"}} ' for o in _COUNTED]
        self._counts = [0, 0]

    def record(self, status: int) -> None:
        """One error answer with this status (every ``ok`` is the handler's)."""
        if status >= 400:
            self._counts[outcome_slot(status) - 1] += 1

    def answered(self, status: int, body: bytes) -> None:
        """One answer TorchServe gave: counted when it is an error of its own (:func:`made_by_server`)."""
        if made_by_server(status, body):
            self.record(status)

    def samples(self) -> list[str]:
        return [f"{prefix}{float(count)}" for prefix, count in zip(self._prefixes, self._counts, strict=True)]


class RequestDurations:
    """A histogram of one model's request durations, in seconds."""

    def __init__(self, labels: str, bounds: Sequence[float] = SERVER_DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.labels = labels
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bucket_of(self.bounds, seconds)] += 1
        self._sum += seconds

    def family(self) -> list[str]:
        name = SERVER_REQUEST_DURATION
        header = [f"# HELP {name} {SERVER_REQUEST_DURATION_HELP}", f"# TYPE {name} histogram"]
        return header + histogram_lines(name, self.labels, self.bounds, self._counts, self._sum)


def wanted(query: str, family: str) -> bool:
    """Whether a scrape with this query string asks for ``family`` (TorchServe filters by ``name[]``)."""
    names = parse_qs(query).get("name[]")
    return not names or family in names


def with_front_metrics(
    exposition: str, query: str, answers: ServerAnswers, durations: RequestDurations, abandoned: int | None = None
) -> str:
    """TorchServe's Prometheus text with the front's series added, those the scrape's query asks for;
    ``abandoned``, the requests the front dropped, where it holds any."""
    lines = exposition.splitlines()
    if wanted(query, REQUESTS_TOTAL):
        _join_requests(lines, answers.samples())
    if wanted(query, SERVER_REQUEST_DURATION):
        lines += durations.family()
    name = f"{ABANDONED_REQUESTS}_total"
    if abandoned is not None and wanted(query, name):
        help_type = [f"# HELP {name} {ABANDONED_REQUESTS_HELP}", f"# TYPE {name} counter"]
        lines += [*help_type, f"{name}{{{durations.labels}}} {float(abandoned)}"]
    return "\n".join(lines) + "\n"


def _join_requests(lines: list[str], samples: list[str]) -> None:
    """``samples`` into the requests family: after its last sample where it has one (a family's samples stay
    together), after its TYPE line where it has none yet, else as a family of their own at the end."""
    family = REQUESTS_TOTAL + "{"
    last = max((i for i, line in enumerate(lines) if line.startswith(family)), default=None)
    if last is not None:
        lines[last + 1 : last + 1] = samples
    elif _REQUESTS_TYPE in lines:
        at = lines.index(_REQUESTS_TYPE) + 1
        lines[at:at] = samples
    else:
        lines += [_REQUESTS_HELP, _REQUESTS_TYPE, *samples]
