"""Go-flavoured reading of JSON objects: nil versus zero values, ``%q`` quoting and resource quantities.

KServe's rules are written against Go structs, where a missing pointer field is nil and a missing
string or int is its zero value; these helpers make the Python rules read the same way.
"""

from __future__ import annotations

import json
import re
from decimal import ROUND_UP, Decimal, InvalidOperation, localcontext
from typing import Any

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def obj(value: Any) -> Obj | None:
    """A nested struct pointer: the dict, or None when absent (Go nil)."""
    return value if isinstance(value, dict) else None


def sub(parent: Obj | None, key: str) -> Obj:
    """A nested struct read as a value: missing becomes empty, as Go's zero struct."""
    found = obj((parent or {}).get(key))
    return found if found is not None else {}


def text(parent: Obj | None, key: str) -> str:
    """A Go string field: missing or null reads as ""."""
    value = (parent or {}).get(key)
    return value if isinstance(value, str) else ""


def number(parent: Obj | None, key: str) -> int:
    """A Go integer field without pointer: missing reads as 0."""
    value = (parent or {}).get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def items(parent: Obj | None, key: str) -> list[Any]:
    value = (parent or {}).get(key)
    return value if isinstance(value, list) else []


def has(parent: Obj | None, key: str) -> bool:
    """A Go pointer, slice or map field is non-nil: present and not null."""
    return (parent or {}).get(key) is not None


def go_quote(value: str) -> str:
    """Go's ``%q`` for the strings these rules quote (printable text quotes the same as JSON)."""
    return json.dumps(value, ensure_ascii=False)


def go_list(values: list[str]) -> str:
    """Go's ``%v`` of a string slice: ``[a b]``."""
    return "[" + " ".join(values) + "]"


def quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``resource.Quantity``) as a number; nil or unparsable reads as 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        return Decimal(0)
    match = _QUANTITY.match(value.strip())
    if match is None:
        return Decimal(0)
    try:
        base = Decimal(match.group(1))
    except InvalidOperation:
        return Decimal(0)
    suffix = match.group(2)
    if suffix not in _SUFFIXES and suffix[:1] in ("e", "E"):  # "E" and "Ei" alone are suffixes
        return base * Decimal(10) ** int(suffix[1:])
    return base * _SUFFIXES.get(suffix, Decimal(0))


_DECIMAL_SUFFIXES = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def canonical_quantity(value: Any) -> Any:
    """A quantity as a Go struct holding it writes it back (apimachinery resource/quantity.go): UnmarshalJSON takes
    a JSON number or string through ParseQuantity, which rounds a non-zero value up to a whole nano; MarshalJSON
    writes CanonicalizeBytes' form, always a string. Its format is the suffix's: BinarySI (Ki..Ei) stays binary
    only for a whole value of magnitude 1024 or more (else it becomes DecimalSI), written with the largest binary
    suffix that leaves a whole number; DecimalSI and DecimalExponent are written as a whole mantissa times the
    largest power of 1000 that leaves one whole (AsCanonicalBytes), with an SI suffix or ``e<exponent>``. So
    ``1`` becomes ``"1"``, ``0.5`` ``"500m"``, ``1000m`` ``"1"``, ``4096Mi`` ``"4Gi"``, ``1.5Gi`` ``"1536Mi"`` and
    ``3000`` ``"3k"``. A value ParseQuantity refuses is left as it is (the webhook would refuse the object)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    match = _QUANTITY.match(str(value).strip())
    if match is None or (match.group(2) not in _SUFFIXES and match.group(2)[:1] not in ("e", "E")):
        return value
    suffix = match.group(2)
    binary, exponent_form = suffix.endswith("i"), suffix not in _SUFFIXES
    with localcontext() as context:
        context.prec = 100
        amount = quantity(str(value).strip())
        nanos = (amount * Decimal(10) ** 9).to_integral_value(rounding=ROUND_UP)
    if nanos == 0:
        return "0"
    sign, nanos = ("-" if nanos < 0 else ""), abs(int(nanos))
    if binary and nanos % 10**9 == 0 and nanos // 10**9 >= 1024:
        whole, power = nanos // 10**9, 0
        while power + 1 < len(_BINARY_SUFFIXES) and whole % 1024 == 0:
            whole, power = whole // 1024, power + 1
        return f"{sign}{whole}{_BINARY_SUFFIXES[power]}"
    mantissa, exponent = nanos, -9
    while mantissa % 1000 == 0 and exponent < 18:
        mantissa, exponent = mantissa // 1000, exponent + 3
    if exponent_form:
        return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")
    return f"{sign}{mantissa}{_DECIMAL_SUFFIXES[exponent]}"


def canonical_resources(value: Any) -> Any:
    """``value`` with every container's ``resources.requests`` and ``resources.limits`` in canonical form, at any
    depth: the predictor's, its model's and containers', the transformer's and explainer's, a worker spec's."""
    if isinstance(value, list):
        return [canonical_resources(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: canonical_resources(item) for key, item in value.items()}
    resources = out.get("resources")
    if isinstance(resources, dict):
        for kind in ("requests", "limits"):
            if isinstance(resources.get(kind), dict):
                resources[kind] = {name: canonical_quantity(q) for name, q in resources[kind].items()}
    return out
