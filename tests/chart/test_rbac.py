"""The chart's RBAC grants exactly what the operator uses: nothing missing, nothing extra.

The permissions are derived, not listed by hand:

* The operator's own API calls: every public method of ``esteira.controller.kube.KubeAPI`` is called, for every
  child kind in ``CHILD_RESOURCES``, against a local HTTP server that records each request; the reconciler is
  run once end to end the same way (it adopts children with ownerReferences and posts Events).
  Requests map to RBAC verbs as the API server maps them (GET one: get, GET many: list, POST: create, ...).
* Kopf's needs, from what the operator hands Kopf: ``esteira.controller.__main__.run`` is run with the
  rendered container arguments and a stand-in for ``kopf.operator`` that keeps its arguments; the registry's
  handlers are resolved to resources with Kopf's own selector matching, and the startup handler's settings
  decide the framework's needs (events, CRD and namespace observation, peering, admission webhooks), following
  Kopf 1.45's ``_core/reactor/observation.py``, ``_core/engines/{posting,peering,admission}.py`` and
  ``_cogs/clients/{watching,patching,events}.py``.

A new API call, child kind, handler or Kopf setting changes the derived set; a new rule or verb in the chart
changes the rendered one; either way a test here fails and names the difference.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kopf
import pytest
import yaml
from kopf._cogs.structs import references
from kopf._core.engines import peering
from kopf._core.intents.causes import Activity
from kubernetes import client

import esteira.controller.__main__ as operator_main
from esteira import API_GROUP, API_VERSION, PLURAL
from esteira.controller.kube import CHILD_RESOURCES, KubeAPI
from esteira.controller.reconciler import Reconciler
from esteira.controller.retry import ApiError
from esteira.render import RenderContext
from esteira.render.job import render_retrain_job
from esteira.vocabulary import LABEL_DEPLOYMENT
from tests.chart.helm import MATRIX, REPO_ROOT, render
from tests.support.cluster import ESTEIRA_CRD

KOPF_VERSION_DERIVED_FOR = "1.45"
EXAMPLE = REPO_ROOT / "manifests" / "examples" / "tabular-cpu.yaml"
COMMAND_CRD = REPO_ROOT / "manifests" / "crds" / "serving.esteira.io_rolloutcommands.yaml"


TAKEN = "-taken"  # a name the recording server answers 409 AlreadyExists for


@dataclass(frozen=True, order=True)
class Permission:
    group: str  # "" for the core group
    resource: str  # plural, or plural/subresource
    verb: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.resource}: {self.verb}"


# --- the resources the operator's world holds -----------------------------------------------------


def _resource(group: str, version: str, plural: str, kind: str, namespaced: bool, **extra: Any) -> references.Resource:
    verbs = frozenset({"create", "delete", "get", "list", "patch", "update", "watch"})
    return references.Resource(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        preferred=True,
        verbs=verbs,
        **extra,
    )


def catalogue() -> list[references.Resource]:
    """What discovery would report for the kinds involved, so Kopf's selectors resolve as in a cluster.

    Esteira's resource comes from its CRD, the children from ``CHILD_RESOURCES``; the rest are the Kubernetes
    and Kopf kinds the framework itself may touch.
    """
    crd = yaml.safe_load(ESTEIRA_CRD.read_text())
    names = crd["spec"]["names"]
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    resources = [
        _resource(
            crd["spec"]["group"],
            version["name"],
            names["plural"],
            names["kind"],
            crd["spec"]["scope"] == "Namespaced",
            shortcuts=frozenset(names.get("shortNames", [])),
            categories=frozenset(names.get("categories", [])),
            subresources=frozenset(version.get("subresources") or {}),
        )
    ]
    command = yaml.safe_load(COMMAND_CRD.read_text())
    (command_version,) = [v for v in command["spec"]["versions"] if v.get("storage")]
    resources.append(
        _resource(
            command["spec"]["group"],
            command_version["name"],
            command["spec"]["names"]["plural"],
            command["spec"]["names"]["kind"],
            True,
            subresources=frozenset(command_version.get("subresources") or {}),
        )
    )
    for (_api_version, kind), (group, child_version, plural) in CHILD_RESOURCES.items():
        resources.append(_resource(group, child_version, plural, kind, True, subresources=frozenset({"status"})))
    resources += [
        _resource("", "v1", "events", "Event", True),
        _resource("", "v1", "namespaces", "Namespace", False),
        _resource("batch", "v1", "jobs", "Job", True, subresources=frozenset({"status"})),
        _resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False),
        _resource("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "X", False),
        _resource("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "Y", False),
        _resource("kopf.dev", "v1", "kopfpeerings", "KopfPeering", True),
        _resource("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False),
        _resource("zalando.org", "v1", "kopfpeerings", "KopfPeering", True),
        _resource("zalando.org", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False),
    ]
    return resources


def resolve(selector: references.Selector) -> list[references.Resource]:
    """The resources a Kopf selector serves, by Kopf's own matching; an unknown resource fails the test."""
    found = sorted(selector.select(catalogue()), key=lambda r: (r.group, r.plural))
    assert found, f"Kopf selector {selector} matches no known resource: add its kind to catalogue()"
    return found


def cluster_scoped() -> set[tuple[str, str]]:
    return {(r.group, r.plural) for r in catalogue() if not r.namespaced}


# --- Kopf: what the operator hands it, and what it does with that ---------------------------------


@dataclass
class KopfRun:
    """The arguments `python -m esteira.controller` passes to ``kopf.operator``."""

    registry: kopf.OperatorRegistry
    clusterwide: bool
    namespaces: list[str]
    standalone: bool
    settings: kopf.OperatorSettings = field(default_factory=kopf.OperatorSettings)


def run_operator(args: list[str], monkeypatch: pytest.MonkeyPatch) -> KopfRun:
    """Run the operator's entry point with ``args`` up to the point where Kopf would take over."""
    captured: dict[str, Any] = {}

    async def fake_operator(**kwargs: Any) -> None:
        captured.update(kwargs)

    for name in ("ESTEIRA_NAMESPACES", "ESTEIRA_PROMETHEUS_URL", "ESTEIRA_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(operator_main.kopf, "operator", fake_operator)
    monkeypatch.setattr(operator_main.kopf, "configure", lambda **_: None)
    monkeypatch.setattr(operator_main, "start_http_server", lambda *_a, **_k: None)
    monkeypatch.setattr(operator_main, "load_client_config", lambda *_a, **_k: None)
    operator_main.main(args)
    run = KopfRun(
        registry=captured["registry"],
        clusterwide=captured["clusterwide"],
        namespaces=list(captured["namespaces"]),
        standalone=bool(captured["standalone"]),
    )
    # What kopf.operator does with these before anything else, then the operator's startup handlers.
    run.settings.peering.standalone = run.standalone
    run.settings.peering.clusterwide = run.clusterwide
    for handler in run.registry._activities.get_all_handlers():
        if handler.activity == Activity.STARTUP:
            result = handler.fn(settings=run.settings, logger=logging.getLogger("test"), memo=kopf.Memo())
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
    return run


async def _await(result: Awaitable[Any]) -> None:
    await result


def _grant(resources: Iterable[references.Resource], verbs: Iterable[str], sub: str = "") -> set[Permission]:
    return {Permission(r.group, r.plural + (f"/{sub}" if sub else ""), verb) for r in resources for verb in verbs}


def kopf_needs(run: KopfRun) -> set[Permission]:
    """Kopf 1.45's API calls for this registry and these settings."""
    registry, settings = run.registry, run.settings
    needs: set[Permission] = set()

    # Handlers: watched resources are listed and watched (_cogs/clients/watching.py); resources with
    # state-keeping handlers (on.create/update/delete/resume, timers, daemons) are patched for finalizers,
    # progress and diff-base (_cogs/clients/patching.py); observation.py groups them the same way.
    watched = (
        registry._indexing.get_all_selectors()
        | registry._watching.get_all_selectors()
        | registry._spawning.get_all_selectors()
        | registry._changing.get_all_selectors()
    )
    patched = registry._spawning.get_all_selectors() | registry._changing.get_all_selectors()
    for selector in watched:
        needs |= _grant(resolve(selector), ("list", "watch"))
    status_storage = not isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage) or (
        not isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    )
    for selector in patched:
        needs |= _grant(resolve(selector), ("patch",))
        if status_storage:  # progress or diff-base kept in .status: patched through the status subresource
            needs |= _grant([r for r in resolve(selector) if "status" in r.subresources], ("patch",), "status")

    # Events about handling (_core/engines/posting.py posts core v1 Events).
    if settings.posting.enabled:
        needs |= _grant(resolve(references.EVENTS), ("create",))

    # Observation (_core/reactor/observation.py): CRDs are listed and watched unless scanning is disabled;
    # namespaces only when serving named namespaces (cluster-wide, Kopf needs no namespace list).
    if not settings.scanning.disabled:
        needs |= _grant(resolve(references.CRDS), ("list", "watch"))
        if not run.clusterwide:
            needs |= _grant(resolve(references.NAMESPACES), ("list", "watch"))

    # Peering (_core/engines/peering.py): none when standalone.
    for selector in peering.guess_selectors(settings):
        needs |= _grant(resolve(selector), ("get", "list", "watch", "patch"))

    # Admission webhooks (_core/engines/admission.py): configurations are managed only when asked for.
    if registry._webhooks.get_all_handlers() or settings.admission.managed is not None:
        for selector in (references.MUTATING_WEBHOOK, references.VALIDATING_WEBHOOK):
            needs |= _grant(resolve(selector), ("create", "patch"))
    return needs


# --- the operator's own calls, recorded over HTTP -------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class RecordingAPI:
    """A local HTTP server that answers like an API server would for one ModelDeployment and records requests."""

    def __init__(self, model_deployment: dict[str, Any]) -> None:
        self.requests: list[Request] = []
        self.md = model_deployment
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlsplit(self.path)
                recorder.requests.append(Request(self.command, url.path, parse_qs(url.query), body))
                status, payload = recorder.answer(self.command, url.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        name = self.md["metadata"]["name"]
        if method == "GET" and path.endswith(f"/{PLURAL}/{name}"):
            return 200, self.md
        if method == "GET":
            return 200, {"items": []}
        if method == "POST" and isinstance(body, dict) and body["metadata"]["name"].endswith(TAKEN):
            return 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409}
        return (201 if method == "POST" else 200), body if isinstance(body, dict) else {}

    @contextmanager
    def running(self) -> Iterator[client.ApiClient]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{self.server.server_port}"))
        finally:
            self.server.shutdown()
            self.server.server_close()


def permission_of(request: Request) -> Permission:
    """The RBAC permission the API server checks for a request (its resource attributes)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise AssertionError(f"not a resource request: {request.path}")
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if request.method == "GET":
        verb = ("watch" if request.query.get("watch") == ["true"] else "list") if name is None else "get"
    else:
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(request.method) or (
            "delete" if name else "deletecollection"
        )
    return Permission(group, f"{plural}/{sub}" if sub else plural, verb)


def example_model_deployment() -> dict[str, Any]:
    md = yaml.safe_load(EXAMPLE.read_text())
    md["metadata"].update(uid="0b6e1c9e-5bd5-4c1a-9a49-2f0b5f1e8c11", resourceVersion="1", generation=1)
    return md


def child_body(api_version: str, kind: str, md: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    labels = {LABEL_DEPLOYMENT: md["metadata"]["name"]}
    metadata = {"name": md["metadata"]["name"] + suffix, "labels": labels}
    body = {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": {}}
    kopf.adopt(body, owner=kopf.Body(md))
    return body


def kube_api_calls(api: KubeAPI, md: dict[str, Any]) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call per public KubeAPI method and child kind, so every request the adapter can make is made."""
    namespace, name = md["metadata"]["namespace"], md["metadata"]["name"]
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get_model_deployment": lambda: api.get_model_deployment(namespace, name),
        "patch_model_deployment_status": lambda: api.patch_model_deployment_status(namespace, name, {"phase": "Ready"}),
        "list_children": lambda: api.list_children(namespace, name),
        "read_secret": lambda: api.read_secret(namespace, "prometheus-credentials"),
        "list_rollout_commands": lambda: api.list_rollout_commands(namespace),
        "patch_rollout_command_status": lambda: api.patch_rollout_command_status(namespace, "c1", {"phase": "Done"}),
        "list_retrain_jobs": lambda: api.list_retrain_jobs(namespace, name),
        "create_job": lambda: api.create_job(namespace, retrain_job(md)),
        "create_job (its name held)": lambda: refused(api.create_job(namespace, retrain_job(md, TAKEN))),
    }
    for api_version, kind in CHILD_RESOURCES:
        key = (api_version, kind, name)
        calls[f"create_child {kind}"] = lambda a=api_version, k=kind: api.create_child(namespace, child_body(a, k, md))
        calls[f"create_child {kind} (its name held)"] = lambda a=api_version, k=kind: refused(
            api.create_child(namespace, child_body(a, k, md, TAKEN))
        )
        calls[f"patch_child {kind}"] = lambda key=key: api.patch_child(namespace, key, {"spec": {}})
        calls[f"delete_child {kind}"] = lambda key=key: api.delete_child(namespace, key)
    return calls


def retrain_job(md: dict[str, Any], suffix: str = "") -> dict[str, Any]:
    template = {"template": {"spec": {"containers": [{"name": "train", "image": "example.com/train:1"}]}}}
    job = render_retrain_job(
        RenderContext(md["metadata"]["name"], md["metadata"]["namespace"]), template, 1, "test", {}
    )
    job["metadata"]["name"] += suffix
    kopf.adopt(job, owner=kopf.Body(md))
    return job


async def refused(call: Awaitable[Any]) -> None:
    """A call the recording server refuses (a create that finds the name held): its requests count all the same."""
    with pytest.raises(ApiError):
        await call


def public_methods(cls: type) -> set[str]:
    return {name for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction) if not name.startswith("_")}


@dataclass
class OperatorCalls:
    requests: list[Request]
    events: list[dict[str, Any]]


def record_operator_calls(monkeypatch: pytest.MonkeyPatch) -> OperatorCalls:
    md = example_model_deployment()
    recorder = RecordingAPI(md)
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "event", lambda *_a, **kwargs: events.append(kwargs))
    with recorder.running() as api_client:
        api = KubeAPI(api_client)
        calls = kube_api_calls(api, md)
        exercised = {name.split()[0] for name in calls}
        assert public_methods(KubeAPI) == exercised, (
            f"KubeAPI methods {sorted(public_methods(KubeAPI) - exercised)} are not exercised here: "
            "add them to kube_api_calls() so their requests count towards the RBAC"
        )

        async def all_calls() -> None:
            for call in calls.values():
                await call()
            await Reconciler(api, None).reconcile(md["metadata"]["namespace"], md["metadata"]["name"])

        asyncio.run(all_calls())
    return OperatorCalls(recorder.requests, events)


def operator_needs(calls: OperatorCalls) -> set[Permission]:
    needs = {permission_of(request) for request in calls.requests}
    # Children adopted with blockOwnerDeletion: under the OwnerReferencesPermissionEnforcement admission plugin
    # the creator must be allowed to update the owner's finalizers subresource.
    for request in calls.requests:
        if request.method == "POST" and isinstance(request.body, dict):
            for ref in request.body.get("metadata", {}).get("ownerReferences", []):
                if ref.get("blockOwnerDeletion"):
                    group = ref["apiVersion"].rpartition("/")[0]
                    owner = [r for r in catalogue() if r.group == group and r.kind == ref["kind"]]
                    assert owner, f"owner kind {ref['kind']} unknown"
                    needs.add(Permission(group, f"{owner[0].plural}/finalizers", "update"))
    if calls.events:  # kopf.event posts through Kopf's poster: core v1 Events
        needs |= _grant(resolve(references.EVENTS), ("create",))
    return needs


# --- the chart's side ---------------------------------------------------------------------------


def granted(role: dict[str, Any]) -> set[Permission]:
    out: set[Permission] = set()
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule and "resourceNames" not in rule, f"unexpected rule form: {rule}"
        for value in (*rule["apiGroups"], *rule["resources"], *rule["verbs"]):
            assert value != "*", f"wildcard in {role['kind']} {role['metadata']['name']}: {rule}"
        out |= {Permission(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


def assert_same(rendered: set[Permission], derived: set[Permission], where: str) -> None:
    missing = sorted(derived - rendered)
    extra = sorted(rendered - derived)
    assert not missing and not extra, (
        f"{where}:\n  missing (the operator needs them): {[str(p) for p in missing]}"
        f"\n  extra (nothing uses them): {[str(p) for p in extra]}"
    )


def operator_args(values: dict[str, Any]) -> list[str]:
    (container,) = render(values).one("Deployment")["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


@pytest.fixture(scope="module")
def operator_calls() -> OperatorCalls:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return record_operator_calls(monkeypatch)


def derived_permissions(
    values: dict[str, Any], operator_calls: OperatorCalls, monkeypatch: pytest.MonkeyPatch
) -> set[Permission]:
    run = run_operator(operator_args(values), monkeypatch)
    return kopf_needs(run) | operator_needs(operator_calls)


# --- tests --------------------------------------------------------------------------------------


def test_kopf_version_is_the_one_the_derivation_follows() -> None:
    """The Kopf needs above follow Kopf 1.45's code; another version may ask for other calls."""
    version = importlib.metadata.version("kopf")
    assert version.startswith(KOPF_VERSION_DERIVED_FOR + "."), (
        f"kopf {version}: re-read its observation, posting, peering and patching code, update kopf_needs(), "
        "then KOPF_VERSION_DERIVED_FOR"
    )


def test_operator_calls_are_recorded(operator_calls: OperatorCalls) -> None:
    """The recording sees the calls the reconciler makes for a new ModelDeployment, not just the adapter's."""
    seen = {(r.method, permission_of(r).resource) for r in operator_calls.requests}
    assert ("POST", "inferenceservices") in seen
    assert ("PATCH", f"{PLURAL}/status") in seen
    assert operator_calls.events, "the reconciler reports its decisions as Events"
    created = [r.body for r in operator_calls.requests if r.method == "POST"]
    assert all(ref["blockOwnerDeletion"] for body in created for ref in body["metadata"]["ownerReferences"])


def test_cluster_mode_role_is_exactly_what_is_used(
    operator_calls: OperatorCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = MATRIX["defaults"]
    derived = derived_permissions(values, operator_calls, monkeypatch)
    rendered = render(values)
    assert not rendered.of_kind("Role") and not rendered.of_kind("RoleBinding")
    (role,) = rendered.of_kind("ClusterRole")
    assert_same(granted(role), derived, f"ClusterRole {role['metadata']['name']}")
    (binding,) = rendered.of_kind("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    account = rendered.one("ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]


def test_namespaced_mode_roles_are_exactly_what_is_used(
    operator_calls: OperatorCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = MATRIX["namespaced"]
    run = run_operator(operator_args(values), monkeypatch)
    assert not run.clusterwide and run.namespaces == values["watchNamespaces"]
    derived = kopf_needs(run) | operator_needs(operator_calls)
    scoped = cluster_scoped()
    cluster_part = {p for p in derived if (p.group, p.resource.split("/")[0]) in scoped}
    namespaced_part = derived - cluster_part

    rendered = render(values)
    account = rendered.one("ServiceAccount")["metadata"]
    subject = [{"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}]
    roles = {r["metadata"]["namespace"]: r for r in rendered.of_kind("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in rendered.of_kind("RoleBinding")}
    assert sorted(roles) == sorted(bindings) == sorted(run.namespaces), "a Role and RoleBinding per watched namespace"
    for namespace, role in roles.items():
        assert_same(granted(role), namespaced_part, f"Role in {namespace}")
        binding = bindings[namespace]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == subject
    (cluster_role,) = rendered.of_kind("ClusterRole")
    assert_same(granted(cluster_role), cluster_part, "ClusterRole for cluster-scoped reads")
    (cluster_binding,) = rendered.of_kind("ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert cluster_binding["subjects"] == subject


def test_kopf_runs_standalone_with_annotation_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The facts the narrow RBAC rests on: no peering objects, no status writes by Kopf, no webhooks."""
    run = run_operator(operator_args(MATRIX["defaults"]), monkeypatch)
    assert run.standalone and run.clusterwide
    assert list(peering.guess_selectors(run.settings)) == []
    assert isinstance(run.settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(run.settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert not run.registry._webhooks.get_all_handlers()


def test_derivation_reacts_to_changes(operator_calls: OperatorCalls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler on a new kind, or Kopf keeping state in status, shows up in the derived permissions."""
    run = run_operator(operator_args(MATRIX["defaults"]), monkeypatch)
    before = kopf_needs(run)
    kopf.on.event("v1", "namespaces", registry=run.registry)(lambda **_: None)
    run.settings.persistence.progress_storage = kopf.StatusProgressStorage()
    after = kopf_needs(run)
    assert after - before == {
        Permission("", "namespaces", "list"),
        Permission("", "namespaces", "watch"),
        Permission(API_GROUP, f"{PLURAL}/status", "patch"),
    }


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", f"/apis/{API_GROUP}/{API_VERSION}/namespaces/ns/{PLURAL}/x", {}, Permission(API_GROUP, PLURAL, "get")),
        ("GET", f"/apis/{API_GROUP}/{API_VERSION}/{PLURAL}", {}, Permission(API_GROUP, PLURAL, "list")),
        (
            "GET",
            f"/apis/{API_GROUP}/{API_VERSION}/{PLURAL}",
            {"watch": ["true"]},
            Permission(API_GROUP, PLURAL, "watch"),
        ),
        (
            "PATCH",
            f"/apis/{API_GROUP}/{API_VERSION}/namespaces/ns/{PLURAL}/x/status",
            {},
            Permission(API_GROUP, f"{PLURAL}/status", "patch"),
        ),
        ("POST", "/api/v1/namespaces/ns/events", {}, Permission("", "events", "create")),
        ("DELETE", "/apis/g/v1/namespaces/ns/things/x", {}, Permission("g", "things", "delete")),
        ("DELETE", "/apis/g/v1/namespaces/ns/things", {}, Permission("g", "things", "deletecollection")),
        ("PUT", "/apis/g/v1/namespaces/ns/things/x/finalizers", {}, Permission("g", "things/finalizers", "update")),
    ],
)
def test_request_to_permission(method: str, path: str, query: dict[str, list[str]], expected: Permission) -> None:
    assert permission_of(Request(method, path, query, None)) == expected


def test_chart_rules_are_commented() -> None:
    """Each rule in the chart says why it is there (the comment above it)."""
    helpers = (Path(__file__).resolve().parents[2] / "charts" / "esteira" / "templates" / "_helpers.tpl").read_text()
    block = helpers.split('define "esteira.namespacedRules"')[1].split("{{- end }}")[0]
    lines = block.strip().splitlines()[1:]
    for number, line in enumerate(lines):
        if line.startswith("- apiGroups"):
            assert lines[number - 1].startswith("#"), f"rule without a reason: {line}"
