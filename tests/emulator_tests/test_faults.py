"""Fault injection hits only the operator's requests (User-Agent ``kopf/...``) and is controllable at runtime."""

from __future__ import annotations

import threading
import time

import pytest

from tests.emulator import EmulatorServer

from .helpers import KOPF_AGENT, http, watch_lines

CMS = "/api/v1/namespaces/default/configmaps"


def test_server_errors_only_for_the_targeted_agent(kube_emulator: EmulatorServer) -> None:
    kube_emulator.set_faults(error_rate=1.0)
    status, body = http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)
    assert status == 500
    assert (body["kind"], body["reason"], body["details"]["injected"]) == ("Status", "InternalError", True)
    assert http(kube_emulator.url, "GET", CMS)[0] == 200  # the test's own requests are never faulted
    assert kube_emulator.faults.injected["error"] == 1
    kube_emulator.clear_faults()
    assert http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)[0] == 200


def test_conflicts_hit_preconditioned_writes_and_are_true(kube_emulator: EmulatorServer) -> None:
    _, created = http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "a"}})
    rv = created["metadata"]["resourceVersion"]
    kube_emulator.set_faults(conflict_rate=1.0)
    obj = f"{CMS}/a"
    merge = {"metadata": {"resourceVersion": rv}, "data": {"k": "v"}}
    status, body = http(
        kube_emulator.url, "PATCH", obj, merge, content_type="application/merge-patch+json", user_agent=KOPF_AGENT
    )
    assert (status, body["reason"]) == (409, "Conflict")
    _, current = http(kube_emulator.url, "GET", obj)
    assert int(current["metadata"]["resourceVersion"]) > int(rv)  # a concurrent write really happened ...
    assert "data" not in current  # ... but the rejected patch did not
    test_op = [{"op": "test", "path": "/metadata/resourceVersion", "value": current["metadata"]["resourceVersion"]}]
    status, _ = http(
        kube_emulator.url, "PATCH", obj, test_op, content_type="application/json-patch+json", user_agent=KOPF_AGENT
    )
    assert status == 422  # how a stale JSON-patch test answers

    plain = {"data": {"k": "v"}}  # no precondition: a real server could not answer 409 here
    status, _ = http(
        kube_emulator.url, "PATCH", obj, plain, content_type="application/merge-patch+json", user_agent=KOPF_AGENT
    )
    assert status == 200
    assert http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "b"}}, user_agent=KOPF_AGENT)[0] == 201
    assert kube_emulator.faults.injected["conflict"] == 2

    kube_emulator.set_faults(conflict_rate=1.0, conflict_any_write=True)
    assert http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "c"}}, user_agent=KOPF_AGENT)[0] == 409
    assert http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)[0] == 200  # reads never conflict
    assert http(kube_emulator.url, "GET", f"{CMS}/c")[0] == 404


def test_dropped_watch_streams_end_early(kube_emulator: EmulatorServer) -> None:
    kube_emulator.set_faults(drop_watch_rate=1.0, drop_watch_after=0.2)
    http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "a"}})
    # An untouched watch without timeoutSeconds never ends: reading it whole would hit the read timeout.
    events = watch_lines(kube_emulator.url, f"{CMS}?watch=true", user_agent=KOPF_AGENT, timeout=10)
    assert [event["type"] for event in events] == ["ADDED"]
    assert kube_emulator.faults.injected["drop_watch"] == 1


def test_expired_watch_streams_end_with_410_gone(kube_emulator: EmulatorServer) -> None:
    kube_emulator.set_faults(gone_watch_rate=1.0, drop_watch_after=0.2)
    http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "a"}})
    events = watch_lines(kube_emulator.url, f"{CMS}?watch=true", user_agent=KOPF_AGENT, timeout=10)
    assert [event["type"] for event in events] == ["ADDED", "ERROR"]
    error = events[-1]["object"]
    assert (error["kind"], error["code"], error["reason"]) == ("Status", 410, "Expired")
    assert kube_emulator.faults.injected["gone_watch"] == 1
    # A new list gives a resourceVersion to watch from again; the test's own watches never expire.
    _, listing = http(kube_emulator.url, "GET", CMS)
    since = listing["metadata"]["resourceVersion"]
    assert watch_lines(kube_emulator.url, f"{CMS}?watch=true&resourceVersion={since}&timeoutSeconds=1") == []


def test_a_held_write_is_never_applied(kube_emulator: EmulatorServer) -> None:
    held = kube_emulator.faults.hold(lambda method, path, body: method == "POST" and body["metadata"]["name"] == "a")
    answers: list[int] = []
    writer = threading.Thread(
        target=lambda: answers.append(
            http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "a"}}, user_agent=KOPF_AGENT)[0]
        )
    )
    writer.start()
    assert held.arrived.wait(10)
    assert held.request is not None and held.request[:2] == ("POST", CMS)
    assert http(kube_emulator.url, "GET", f"{CMS}/a")[0] == 404  # parked before anything was stored
    assert http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "b"}}, user_agent=KOPF_AGENT)[0] == 201
    held.release()
    writer.join(10)
    assert answers == [500]
    assert http(kube_emulator.url, "GET", f"{CMS}/a")[0] == 404
    # One request per hold: the same write again goes through.
    assert http(kube_emulator.url, "POST", CMS, {"metadata": {"name": "a"}}, user_agent=KOPF_AGENT)[0] == 201
    assert kube_emulator.faults.injected["held"] == 1


def test_slow_responses(kube_emulator: EmulatorServer) -> None:
    kube_emulator.set_faults(slow_rate=1.0, delay=0.5)
    started = time.monotonic()
    assert http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)[0] == 200
    assert time.monotonic() - started >= 0.5  # the delay is a floor, not a performance figure
    http(kube_emulator.url, "GET", CMS)  # a test's own request is never slowed
    assert kube_emulator.faults.injected["slow"] == 1


def test_fractions_are_seeded_and_reproducible(kube_emulator: EmulatorServer) -> None:
    def statuses() -> list[int]:
        return [http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)[0] for _ in range(30)]

    kube_emulator.set_faults(error_rate=0.5, seed=11)
    first = statuses()
    kube_emulator.set_faults(error_rate=0.5, seed=11)
    assert statuses() == first
    assert 5 <= first.count(500) <= 25


def test_other_agents_can_be_targeted(kube_emulator: EmulatorServer) -> None:
    kube_emulator.set_faults(error_rate=1.0, agents=("my-operator/",))
    assert http(kube_emulator.url, "GET", CMS, user_agent="my-operator/0.1")[0] == 500
    assert http(kube_emulator.url, "GET", CMS, user_agent=KOPF_AGENT)[0] == 200


def test_invalid_rates_are_refused(kube_emulator: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="conflict_rate"):
        kube_emulator.set_faults(conflict_rate=2)
