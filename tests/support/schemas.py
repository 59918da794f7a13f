"""Offline validation of the manifests Esteira renders, as close to the API server as a test can get.

Built-in kinds (Deployment, Service, RBAC, ...) are checked with ``kubernetes-validate`` against the
Kubernetes 1.37 OpenAPI schemas. Custom resources (InferenceService, HTTPRoute, ServiceMonitor, and
Esteira's own ModelDeployment) are checked against their CRDs: the upstream ones (``$ESTEIRA_UPSTREAM_CRDS``,
else ``../shared/crds``, else ``.tools/crds`` from `make crds-upstream`) and the project's in ``manifests/crds``.
A CRD's ``openAPIV3Schema`` is turned into JSON Schema Draft 7 the way the API server reads it:

* ``x-kubernetes-int-or-string`` accepts an integer or a string;
* ``nullable: true`` accepts null; elsewhere null is an error (the server would silently drop it);
* objects with ``properties`` reject unknown fields, as ``kubectl apply`` does (server-side strict field
  validation), unless ``x-kubernetes-preserve-unknown-fields`` is set;
* ``x-kubernetes-list-type: set`` items and ``x-kubernetes-list-map-keys`` keys must be unique;
* ``x-kubernetes-validations`` (CEL) rules are evaluated after schema defaults are applied, skipping
  transition rules (those that use ``oldSelf``), since a rendered manifest is a create.

``metadata`` is checked too: name (DNS-1123 subdomain; DNS-1035 label for Services and
InferenceServices, DNS-1123 label for Namespaces, path segment for RBAC), namespace, label keys and values.

CEL: rules are evaluated with cel-python (``celpy``) plus Kubernetes' list library (``isSorted``,
``sum``, ``min``, ``max``, ``indexOf``, ``lastIndexOf`` on lists) and quantity library (``quantity``,
``isQuantity``, ``compareTo``, ``isGreaterThan``, ``isLessThan``, ``sign``, ``asApproximateFloat``; not ``add``,
``sub``, ``isInteger`` and ``asInteger``). Field names are escaped as Kubernetes
does (``namespace`` -> ``__namespace__``, ``a-b`` -> ``a__dash__b``), and with a schema, ``number`` fields
become doubles and defaults are filled in. Forms that both celpy and Kubernetes accept:

* comparisons and arithmetic between values of the same numeric type: ``self.min <= self.max``;
* presence: ``!has(self.x) || self.x > 0``, ``has(self.a) == has(self.b)``;
* macros over lists and map keys: ``all``, ``exists``, ``exists_one``, ``filter``, ``map``
  (``self.steps.all(s, s > 0)``, ``self.items.filter(i, i.primary).size() == 1``);
* ``size()``, indexing, ``in``, ``?:``, ``+`` on lists and strings:
  ``size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100``;
* strings: ``startsWith``, ``endsWith``, ``contains``, ``matches`` (RE2 syntax);
* ``int()``, ``double()``, ``string()``, ``duration()``, ``timestamp()``;
* ordered lists: ``self.steps.isSorted()``; strictly increasing:
  ``self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))``, or index by index for
  a short list with ``maxItems``: ``size(self.steps) < 2 || self.steps[0] < self.steps[1]``.

Not evaluated by celpy although Kubernetes accepts them (a rule using them raises ``CelError``):
two-variable comprehensions (``self.steps.all(i, v, i == 0 || self.steps[i - 1] < v)``), comparisons
across numeric types (``1 > 0.5``; coerce with ``double()``), optionals (``self.?x``), ext.Strings
functions other than ``indexOf`` (``split``, ``lowerAscii``, ...), ``sets.*``, quantity arithmetic and integer
readings, and the url,
ip, cidr, format, semver and image libraries. ``lists.range`` and ``sortBy`` exist in neither.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

from esteira.api.quantity import parse_quantity
from tests.support.prerequisites import REPO_ROOT, skip_missing

UPSTREAM_CRDS_ENV = "ESTEIRA_UPSTREAM_CRDS"
KUBERNETES_VERSION = "1.37.0"
# the HTTPRoute CRD, relative to the upstream CRD folder (hack/fetch-crds.sh)
HTTPROUTE_CRD = "gateway-api-v1.6.1/gateway.networking.k8s.io_httproutes.yaml"


class ManifestError(AssertionError):
    """A manifest the API server would reject; ``errors`` lists one line per problem."""

    def __init__(self, what: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{what} is invalid:\n" + "\n".join(f"  - {e}" for e in errors))


class CelError(Exception):
    """A CEL rule that could not be compiled or evaluated here."""


# --- where the CRDs are -------------------------------------------------------------------------


def upstream_crds_candidates() -> tuple[Path, ...]:
    """Where the upstream CRDs are looked for, in order: $ESTEIRA_UPSTREAM_CRDS alone when it is set, else
    ../shared/crds beside the repository, else .tools/crds (where `make crds-upstream` downloads them)."""
    named = os.environ.get(UPSTREAM_CRDS_ENV)
    if named:
        return (Path(named),)
    return (REPO_ROOT.parent / "shared" / "crds", REPO_ROOT / ".tools" / "crds")


def upstream_crds_path() -> Path:
    """The upstream CRD folder: the first candidate that exists, else the first candidate."""
    candidates = upstream_crds_candidates()
    return next((path for path in candidates if path.is_dir()), candidates[0])


def upstream_crds_dir() -> Path:
    """The upstream CRD folder; skips the calling test when it is absent."""
    path = upstream_crds_path()
    if not path.is_dir():
        looked = " or ".join(str(candidate) for candidate in upstream_crds_candidates())
        skip_missing(f"upstream CRDs (looked in {looked})", f"run `make crds-upstream` or set {UPSTREAM_CRDS_ENV}")
    return path


def project_crds_dir() -> Path:
    return REPO_ROOT / "manifests" / "crds"


# --- metadata -----------------------------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_PATH_SEGMENT = r"(?!\.\.?$)[^/%]+"
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

_LABEL_CHARS = "lower-case alphanumerics and '-', alphanumeric at both ends"
_SUBDOMAIN_RULE = (f"a DNS-1123 subdomain ({_LABEL_CHARS}, dot-separated)", _DNS1123_SUBDOMAIN, 253)
_DNS1035_RULE = (f"a DNS-1035 label ({_LABEL_CHARS}, a letter first)", _DNS1035_LABEL, 63)
_NAME_RULES = {
    "Namespace": (f"a DNS-1123 label ({_LABEL_CHARS})", _DNS1123_LABEL, 63),
    "Service": _DNS1035_RULE,
    # KServe's admission webhook takes DNS-1035 label syntax (the length is the API server's CR limit).
    "InferenceService": (*_DNS1035_RULE[:2], 253),
    **dict.fromkeys(
        ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"),
        ("a path segment (no '/' or '%', not '.' or '..')", _PATH_SEGMENT, 253),
    ),
}


def _matches(pattern: str, value: Any, max_len: int) -> bool:
    return isinstance(value, str) and len(value) <= max_len and re.fullmatch(pattern, value) is not None


def _label_key_error(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and not _matches(_DNS1123_SUBDOMAIN, prefix, 253):
        return f"key prefix {prefix!r} must be a DNS-1123 subdomain"
    if not _matches(_LABEL_NAME, name, 63):
        return f"key {key!r} must be 63 characters or less: alphanumerics, '-', '_', '.', alphanumeric at both ends"
    return None


def metadata_errors(obj: dict[str, Any]) -> list[str]:
    """Problems the API server finds in ``metadata`` regardless of kind's schema."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required object"]
    errors = []
    what, pattern, max_len = _NAME_RULES.get(obj.get("kind", ""), _SUBDOMAIN_RULE)
    named = "name" in meta or "generateName" not in meta  # generateName alone is fine
    if named and not _matches(pattern, meta.get("name"), max_len):
        errors.append(f"metadata.name: {meta.get('name')!r} must be {what}, at most {max_len} characters")
    if "namespace" in meta and not _matches(_DNS1123_LABEL, meta["namespace"], 63):
        errors.append(f"metadata.namespace: {meta['namespace']!r} must be a DNS-1123 label")
    for field in ("labels", "annotations"):
        entries = meta.get(field) or {}
        if not isinstance(entries, dict):
            errors.append(f"metadata.{field}: must be a map of strings")
            continue
        for key, value in entries.items():
            if (problem := _label_key_error(str(key))) is not None:
                errors.append(f"metadata.{field}: {problem}")
            if not isinstance(value, str):
                errors.append(f"metadata.{field}[{key}]: {value!r} must be a string")
            elif field == "labels" and value and not _matches(_LABEL_NAME, value, 63):
                errors.append(
                    f"metadata.labels[{key}]: {value!r} must be 63 characters or less: "
                    "alphanumerics, '-', '_', '.', alphanumeric at both ends"
                )
    return errors


def _describe(obj: dict[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name") or "<unnamed>"
    return f"{obj.get('apiVersion')} {obj.get('kind')} {name!r}"


def _require_type_meta(obj: Any) -> None:
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("apiVersion", "kind")):
        raise ManifestError("manifest", [f"apiVersion and kind must be strings: {_shorten(repr(obj), 120)}"])


def _format_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "<root>"


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- built-in kinds -----------------------------------------------------------------------------


class _NoBuiltinSchema(ManifestError):
    pass


def validate_kubernetes(obj: dict[str, Any], version: str = KUBERNETES_VERSION, strict: bool = True) -> None:
    """Validate a built-in kind with kubernetes-validate; ``strict`` rejects unknown fields."""
    _require_type_meta(obj)
    errors = metadata_errors(obj)
    try:
        kubernetes_validate.validate(obj, version, strict=strict)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise _NoBuiltinSchema(_describe(obj), [exc.message]) from None
    except kubernetes_validate.ValidationError as exc:
        errors.insert(0, f"{_format_path(exc.absolute_path)}: {_shorten(exc.message)} (Kubernetes {exc.version})")
    if errors:
        raise ManifestError(_describe(obj), errors)


# --- custom resources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _CrdVersion:
    crd: dict[str, Any]
    schema: dict[str, Any]  # openAPIV3Schema as written in the CRD
    source: Path


def _crd_dirs() -> tuple[Path, ...]:
    return (project_crds_dir(), upstream_crds_path())


@functools.cache
def _crd_index(dirs: tuple[Path, ...]) -> dict[tuple[str, str, str], _CrdVersion]:
    """(group, version, kind) -> CRD version; the first folder wins."""
    index: dict[tuple[str, str, str], _CrdVersion] = {}
    for folder in dirs:
        files = sorted(p for pattern in ("*.yaml", "*.yml") for p in folder.rglob(pattern))
        for path in files:
            with path.open() as stream:
                docs = list(yaml.load_all(stream, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schema = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
                    index.setdefault(key, _CrdVersion(doc, schema, path))
    return index


def _find(api_version: str, kind: str) -> _CrdVersion:
    group, _, version = api_version.rpartition("/")
    found = _crd_index(_crd_dirs()).get((group, version, kind))
    if found is None:
        upstream_crds_dir()  # the CRD may be one of the upstream ones: skip rather than fail
        raise ManifestError(
            f"{api_version} {kind}", [f"no CRD serves it in {project_crds_dir()} or {upstream_crds_path()}"]
        )
    return found


def find_crd(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD that serves ``api_version``/``kind``; skips the test when the upstream CRDs are absent."""
    return _find(api_version, kind).crd


def to_json_schema(node: dict[str, Any], structural: bool = True) -> dict[str, Any]:
    """Convert a structural openAPIV3Schema into JSON Schema Draft 7 with the API server's semantics.
    ``structural`` is false inside allOf/anyOf/oneOf/not, which only add checks and close nothing."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub, structural) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value, structural)
        elif key == "not":
            out[key] = to_json_schema(value, False)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub, False) for sub in value]
        elif key not in ("description", "x-kubernetes-validations", "nullable", "format"):
            # Formats (int32, date-time, ...) are not checked, as jsonschema does by default.
            out[key] = value
    # OpenAPI v3.0 (and Kubernetes) write exclusive bounds as booleans beside minimum/maximum.
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool) and out.pop(bound) and limit in out:
            out[bound] = out.pop(limit)
    if node.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        structural
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _unique_list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    item_props = (schema.get("items") or {}).get("properties", {})
    seen: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k, item_props.get(k, {}).get("default")) for k in keys)
        if key in seen:
            shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
            yield jsonschema.ValidationError(f"duplicate entry ({shown}); first at [{seen[key]}]", path=[i])
        else:
            seen[key] = i


_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys}
)


@functools.cache
def _validator(dirs: tuple[Path, ...], key: tuple[str, str, str]) -> Any:
    schema = to_json_schema(_crd_index(dirs)[key].schema)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return _Validator(schema)


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Validate a custom resource against its CRD (schema, metadata, CEL rules); lists every error."""
    _require_type_meta(obj)
    api_version, kind = obj["apiVersion"], obj["kind"]
    found = _find(api_version, kind)
    group, _, version = api_version.rpartition("/")
    validator = _validator(_crd_dirs(), (group, version, kind))
    schema_errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    errors = [f"{_format_path(e.absolute_path)}: {_shorten(e.message)}" for e in schema_errors]
    errors += metadata_errors(obj)
    if not schema_errors:  # CEL rules assume a value that already fits the schema
        errors += cel_errors(obj, found.schema)
    if errors:
        raise ManifestError(f"{_describe(obj)} ({found.source.name})", errors)


# --- any manifest -------------------------------------------------------------------------------


def validate_manifest(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Built-in kinds go to kubernetes-validate (strict), everything else to its CRD."""
    try:
        validate_kubernetes(obj, version, strict=True)
    except _NoBuiltinSchema:
        validate_custom_resource(obj)


def validate_manifests(objs: Iterable[dict[str, Any]], version: str = KUBERNETES_VERSION) -> None:
    """Validate every document (``None`` entries from empty YAML documents are ignored); reports all."""
    problems = []
    for obj in objs:
        if obj is None:
            continue
        try:
            validate_manifest(obj, version)
        except ManifestError as exc:
            problems.append(str(exc))
    if problems:
        raise ManifestError(f"{len(problems)} manifest(s)", problems)


# --- CEL ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    version: str  # CRD version
    path: str  # where ``self`` points: ".spec.strategy.steps", list items and map values as "[*]"
    rule: str
    message: str | None
    field_path: str | None  # the rule's fieldPath, relative to ``path``
    schema: dict[str, Any]  # the openAPIV3Schema node that carries the rule

    @property
    def is_transition(self) -> bool:
        return "oldSelf" in self.rule


def _walk_rules(node: dict[str, Any], path: str, version: str) -> Iterator[CelRule]:
    for entry in node.get("x-kubernetes-validations") or []:
        yield CelRule(version, path or ".", entry["rule"], entry.get("message"), entry.get("fieldPath"), node)
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk_rules(sub, f"{path}.{name}", version)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk_rules(node[key], f"{path}[*]", version)


def cel_rules(crd: dict[str, Any]) -> list[CelRule]:
    """Every ``x-kubernetes-validations`` rule of every version of ``crd``."""
    return [
        rule
        for version in crd["spec"]["versions"]
        for rule in _walk_rules(version.get("schema", {}).get("openAPIV3Schema", {}), "", version["name"])
    ]


_CEL_RESERVED = frozenset(
    {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if"}
    | {"import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
)


def _escape(name: str) -> str:
    """Kubernetes' escaping of property names for CEL (``a-b`` -> ``a__dash__b``)."""
    if name in _CEL_RESERVED:
        return f"__{name}__"
    name = name.replace("__", "__underscores__")
    return name.replace(".", "__dot__").replace("-", "__dash__").replace("/", "__slash__")


def _to_cel(value: Any, schema: dict[str, Any] | None) -> Any:
    schema = schema or {}
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:  # an object: escaped field names, defaults filled in
            value = {**{k: s["default"] for k, s in props.items() if "default" in s}, **value}
            return celtypes.MapType(
                {celtypes.StringType(_escape(k)): _to_cel(v, props.get(k)) for k, v in value.items()}
            )
        values = schema.get("additionalProperties")
        values = values if isinstance(values, dict) else None
        return celtypes.MapType({celtypes.StringType(k): _to_cel(v, values) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([_to_cel(v, schema.get("items")) for v in value])
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    return json_to_cel(value)


def _sum(items: Any) -> Any:
    return functools.reduce(lambda a, b: a + b, items) if items else celtypes.IntType(0)


def _index_of(target: Any, item: Any, last: bool = False) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(target.rfind(item) if last else target.find(item))
    positions = [i for i, v in enumerate(target) if v == item]
    return celtypes.IntType((positions[-1] if last else positions[0]) if positions else -1)


@dataclass(frozen=True, order=True)
class _Quantity:
    """A CEL Quantity (k8s.io/apiserver/pkg/cel/library/quantity.go): apimachinery's ParseQuantity value."""

    value: Fraction


def _quantity(text: Any) -> _Quantity:
    try:
        return _Quantity(parse_quantity(str(text)))
    except ValueError as exc:  # Kubernetes: a runtime error, the object is refused
        raise CelError(f"quantity({text!r}): {exc}") from exc


def _is_quantity(text: Any) -> Any:
    try:
        parse_quantity(str(text))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


def _compare(a: _Quantity, b: _Quantity) -> Any:
    return celtypes.IntType((a.value > b.value) - (a.value < b.value))


# Kubernetes' list library (k8s.io/apiserver/pkg/cel/library/lists.go) and quantity library (quantity.go: the
# comparisons; not add, sub, isInteger and asInteger, whose int64 reading keeps "1.0" from being an integer),
# absent from celpy. Values compare exactly, where ParseQuantity rounds below 1n and caps binary ones at 2**63-1.
_K8S_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "compareTo": _compare,
    "isGreaterThan": lambda a, b: celtypes.BoolType(a.value > b.value),
    "isLessThan": lambda a, b: celtypes.BoolType(a.value < b.value),
    "sign": lambda q: celtypes.IntType((q.value > 0) - (q.value < 0)),
    "asApproximateFloat": lambda q: celtypes.DoubleType(float(q.value)),
    "isSorted": lambda items: celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items))),
    "sum": _sum,
    "min": lambda items: min(items),
    "max": lambda items: max(items),
    "indexOf": _index_of,
    "lastIndexOf": lambda target, item: _index_of(target, item, last=True),
}


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    try:
        return env.program(env.compile(rule), functions=_K8S_FUNCTIONS)
    except Exception as exc:
        raise CelError(f"cannot compile {rule!r}: {_shorten(str(exc))}") from exc


def evaluate_cel_rule(
    rule: str, self_value: Any, old_self: Any = None, *, schema: dict[str, Any] | None = None
) -> bool:
    """Evaluate one ``x-kubernetes-validations`` rule; ``schema`` is the node's openAPIV3Schema
    (``CelRule.schema``), used for defaults, field-name escaping and number types."""
    activation = {"self": _to_cel(self_value, schema)}
    if old_self is not None:
        activation["oldSelf"] = _to_cel(old_self, schema)
    try:
        result = _program(rule).evaluate(activation)
    except CelError:
        raise
    except Exception as exc:  # celpy raises CELEvalError, and plain Python errors on forms it lacks
        raise CelError(f"cannot evaluate {rule!r}: {_shorten(str(exc))}") from exc
    if not isinstance(result, celtypes.BoolType):
        raise CelError(f"{rule!r} gave {result!r}, not a bool")
    return bool(result)


def cel_errors(obj: Any, schema: dict[str, Any], path: str = "", old: Any = None) -> list[str]:
    """Failed CEL rules anywhere in ``obj`` under ``schema`` (openAPIV3Schema).

    Transition rules (``oldSelf``) run only where ``old``, the stored object on an update, has a value
    at the same place, as the API server does; list items are not paired (no list-type map here).
    """
    errors = []
    for entry in schema.get("x-kubernetes-validations") or []:
        rule = entry["rule"]
        transition = "oldSelf" in rule
        if transition and old is None:
            continue
        where = (path + entry.get("fieldPath", "")).lstrip(".") or "<root>"
        try:
            if not evaluate_cel_rule(rule, obj, old if transition else None, schema=schema):
                errors.append(f"{where}: {entry.get('message') or f'failed rule {rule}'}")
        except CelError as exc:
            errors.append(f"{where}: {exc}")
    if isinstance(obj, dict):
        old_map = old if isinstance(old, dict) else {}
        for name, sub in (schema.get("properties") or {}).items():
            if name in obj:
                errors += cel_errors(obj[name], sub, f"{path}.{name}".lstrip("."), old_map.get(name))
        if isinstance(schema.get("additionalProperties"), dict):
            for name, item in obj.items():
                errors += cel_errors(item, schema["additionalProperties"], f"{path}[{name}]", old_map.get(name))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += cel_errors(item, schema["items"], f"{path}[{i}]")
    return errors
