"""The API server's checks of ``metadata`` on every write (k8s.io/apimachinery, Kubernetes 1.3x).

Sources: ``pkg/api/validation/objectmeta.go`` (ValidateObjectMetaAccessor, ValidateAnnotations,
ValidateOwnerReferences, ValidateFinalizers) and ``pkg/util/validation/validation.go`` (IsDNS1123Subdomain,
IsDNS1123Label, IsQualifiedName, IsValidLabelValue); messages are theirs, one line per field error.
"""

from __future__ import annotations

import json
import re
from typing import Any

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
TOTAL_ANNOTATION_SIZE = 256 * 1024  # objectmeta.go: TotalAnnotationSizeLimitB
_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)


def object_meta_errors(meta: dict[str, Any], *, namespaced: bool, name_is_label: bool) -> list[str]:
    """ValidateObjectMetaAccessor: name, namespace, labels, annotations, ownerReferences, finalizers."""
    causes: list[str] = []
    name = meta.get("name") or ""
    name_check = dns1123_label if name_is_label else dns1123_subdomain
    causes += [_invalid("metadata.name", name, msg) for msg in name_check(name)]
    namespace = meta.get("namespace") or ""
    if namespaced:
        causes += [_invalid("metadata.namespace", namespace, msg) for msg in dns1123_label(namespace)]
    causes += label_errors(meta.get("labels") or {})
    causes += annotation_errors(meta.get("annotations") or {})
    causes += owner_reference_errors(meta.get("ownerReferences") or [])
    for finalizer in meta.get("finalizers") or []:  # ValidateFinalizers / ValidateFinalizerName
        causes += [_invalid("metadata.finalizers", finalizer, msg) for msg in qualified_name(str(finalizer))]
    return causes


def label_errors(labels: dict[str, Any]) -> list[str]:
    """meta/v1/validation: ValidateLabels (keys are qualified names, values label values)."""
    causes = []
    for key in sorted(labels):
        causes += [_invalid("metadata.labels", key, msg) for msg in qualified_name(key)]
        value = labels[key] if isinstance(labels[key], str) else str(labels[key])
        causes += [_invalid("metadata.labels", value, msg) for msg in label_value(value)]
    return causes


def annotation_errors(annotations: dict[str, Any]) -> list[str]:
    """ValidateAnnotations: keys are qualified names (case-insensitive); keys and values total 256 KiB."""
    causes = []
    for key in sorted(annotations):
        causes += [_invalid("metadata.annotations", key, msg) for msg in qualified_name(key.lower())]
    size = sum(len(key.encode()) + len(str(value).encode()) for key, value in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE:
        causes.append(f"metadata.annotations: Too long: may not be more than {TOTAL_ANNOTATION_SIZE} bytes")
    return causes


def owner_reference_errors(references: list[Any]) -> list[str]:
    """ValidateOwnerReferences: apiVersion (with a version), kind, name and uid set; one controller at most."""
    causes = []
    first_controller = ""
    for ref in references:
        ref = ref if isinstance(ref, dict) else {}
        api_version = str(ref.get("apiVersion") or "")
        version = api_version.split("/")[-1] if api_version.count("/") <= 1 else ""
        for key, empty, what in (
            ("apiVersion", not version, "version"),
            ("kind", not ref.get("kind"), "kind"),
            ("name", not ref.get("name"), "name"),
            ("uid", not ref.get("uid"), "uid"),
        ):
            if empty:
                causes.append(
                    _invalid(f"metadata.ownerReferences.{key}", str(ref.get(key) or ""), f"{what} must not be empty")
                )
        if ref.get("controller") is True:
            current = f"{ref.get('kind', '')}/{ref.get('name', '')}"
            if first_controller:
                why = f'Only one reference can have Controller set to true. Found "true" in references for {first_controller} and {current}'
                causes.append(f"metadata.ownerReferences: Invalid value: {json.dumps(references)}: {why}")
            else:
                first_controller = current
    return causes


def dns1123_subdomain(value: str) -> list[str]:
    """validation.go: IsDNS1123Subdomain."""
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not re.fullmatch(DNS1123_SUBDOMAIN_FMT, value):
        errors.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character",
                DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errors


def dns1123_label(value: str) -> list[str]:
    """validation.go: IsDNS1123Label."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not re.fullmatch(DNS1123_LABEL_FMT, value):
        errors.append(
            _regex_error(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character",
                DNS1123_LABEL_FMT,
                "my-name",
                "123-abc",
            )
        )
    return errors


def qualified_name(value: str) -> list[str]:
    """validation.go: IsQualifiedName (an optional DNS subdomain prefix, '/', a name of at most 63 characters)."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errors: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        errors = (
            ["prefix part must be non-empty"] if not prefix else [f"prefix part {m}" for m in dns1123_subdomain(prefix)]
        )
    else:
        example = _regex_error(_QUALIFIED_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        return [f"a qualified name {example} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(QUALIFIED_NAME_FMT, name):
        errors.append("name part " + _regex_error(_QUALIFIED_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def label_value(value: str) -> list[str]:
    """validation.go: IsValidLabelValue."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not re.fullmatch(LABEL_VALUE_FMT, value):
        message = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        errors.append(_regex_error(message, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """validation.go: RegexError (its examples are joined with ", " then " or ", hence the double space)."""
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def _invalid(path: str, value: str, detail: str) -> str:
    """field.Invalid rendered as kube-apiserver prints it."""
    return f"{path}: Invalid value: {json.dumps(value)}: {detail}"
