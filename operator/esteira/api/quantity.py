"""Kubernetes quantities and container resource names, read as the API server reads a pod's resources.

A ModelDeployment's `resources` become the predictor container's, and the API server checks them when KServe
creates the Deployment (or Knative revision) from it: a pair it refuses leaves the revision without pods, never
ready. The spec refuses such pairs itself (`esteira.api.spec.ResourceRequirements`), with these readings:

- a quantity's value, exact (apimachinery `resource.ParseQuantity`: a decimal number, then a binary suffix Ki..Ei,
  a decimal one n..E, or an integer exponent);
- which names a container may ask for (core/v1 validation `validateContainerResourceName`,
  `helper.IsStandardContainerResourceName`);
- which resources may be overcommitted (`helper.IsOvercommitAllowed`: native resources other than hugepages) and
  which count whole units (`helper.IsExtendedResourceName`: a domain other than kubernetes.io).
"""

from __future__ import annotations

import re
from fractions import Fraction

STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
HUGEPAGES_PREFIX = "hugepages-"
NATIVE_DOMAIN = "kubernetes.io/"
QUOTA_PREFIX = "requests."  # a quota's name for a request: never a container's resource
# The resources KServe's stock configuration defaults in requests and limits alike (inferenceService.resource).
KSERVE_DEFAULTED = ("cpu", "memory")

# No sign: a request or limit below zero is refused. The exponent is an integer (ParseQuantity's grammar takes
# `1e2.5`, and its parser then refuses it) of two digits at most: `1e99999999` took the exact reading minutes.
# One group for the number and one for the suffix (the schema's pattern).
QUANTITY_PATTERN = r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
# A quantity's longest form in the schema: the API server's CEL cost estimate sizes an unbounded int-or-string at
# the whole request, and two conversions of one in a rule over 16 resources went past its per-rule limit.
MAX_QUANTITY_LENGTH = 64
# How a device's resource (counted in whole units) is written: kube-apiserver takes any whole value ("1.0",
# "1000m"), the CEL quantity library's isInteger() only some; digits alone read the same on both sides.
WHOLE_NUMBER_PATTERN = r"^\+?[0-9]+$"
# "requests." + an extended resource's name must be a qualified name (helper.IsExtendedResourceName): its domain
# 253 characters at most.
MAX_EXTENDED_DOMAIN = 253 - len("requests.")
_QUANTITY = re.compile(QUANTITY_PATTERN)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: int | str) -> Fraction:
    """The exact value of a non-negative quantity (`2`, `"500m"`, `"1.5Gi"`, `"1e3"`); ValueError otherwise."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return Fraction(value)
    match = _QUANTITY.fullmatch(value)  # `$` alone lets a trailing newline through
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = Fraction(match[1].rstrip(".") or "0"), match[2] or ""
    if suffix in _BINARY:
        return number * Fraction(2) ** (10 * _BINARY[suffix])
    exponent = int(suffix[1:]) if suffix[:1] in ("e", "E") and len(suffix) > 1 else _DECIMAL.get(suffix, 0)
    return number * Fraction(10) ** exponent


def is_native(name: str) -> bool:
    """A resource of Kubernetes' own: no domain, or the kubernetes.io one."""
    return "/" not in name or NATIVE_DOMAIN in name


def overcommit_allowed(name: str) -> bool:
    """Whether a request may be below its limit (or go without one): native resources other than hugepages."""
    return is_native(name) and not name.startswith(HUGEPAGES_PREFIX)


def is_whole_number(value: int | str) -> bool:
    """Whether a device's resource is written as a count (see WHOLE_NUMBER_PATTERN)."""
    return isinstance(value, int) or re.fullmatch(WHOLE_NUMBER_PATTERN, value) is not None


def is_extended(name: str) -> bool:
    """A device plugin's (or other) resource with a domain of its own: counted in whole units, never shared."""
    return not is_native(name) and not name.startswith(QUOTA_PREFIX)


def container_resource_name_problem(name: str) -> str | None:
    """Why a container cannot ask for `name`, or None."""
    if "/" not in name:
        if name in STANDARD_CONTAINER_RESOURCES or name.startswith(HUGEPAGES_PREFIX):
            return None
        return (
            f"{name!r} is not a container resource: a name without a domain must be "
            f"{', '.join(STANDARD_CONTAINER_RESOURCES)} or {HUGEPAGES_PREFIX}<page size> (a device's resource "
            "carries its domain, such as nvidia.com/gpu)"
        )
    if not is_native(name) and not is_extended(name):
        return f"{name!r} is a quota's name, not a container resource"
    if is_extended(name) and name.index("/") > MAX_EXTENDED_DOMAIN:
        return f"{name!r}: a device's resource has a domain of {MAX_EXTENDED_DOMAIN} characters at most"
    return None
