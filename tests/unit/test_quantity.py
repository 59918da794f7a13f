"""Quantities and resource names read as the API server reads a container's resources."""

from __future__ import annotations

from fractions import Fraction

import pytest

from esteira.api.quantity import (
    container_resource_name_problem,
    is_extended,
    is_whole_number,
    overcommit_allowed,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [  # apimachinery resource.ParseQuantity's readings
        ("0", Fraction(0)),
        ("2", Fraction(2)),
        ("+3", Fraction(3)),
        ("1.", Fraction(1)),
        (".5", Fraction(1, 2)),
        ("500m", Fraction(1, 2)),
        ("100u", Fraction(1, 10_000)),
        ("5n", Fraction(5, 10**9)),
        ("2k", Fraction(2000)),
        ("1.5M", Fraction(1_500_000)),
        ("1E", Fraction(10**18)),  # exa, not an exponent
        ("1Ki", Fraction(1024)),
        ("1.5Gi", Fraction(3 * 2**29)),
        ("1Ei", Fraction(2**60)),
        ("1e3", Fraction(1000)),
        ("1E-2", Fraction(1, 100)),
        ("25e+1", Fraction(250)),
        (7, Fraction(7)),
    ],
)
def test_a_quantity_has_its_exact_value(text: str | int, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text", ["", "-1", -1, "1e", "1e2.5", "1.5.5", "Ki", "1 Gi", "1ki", "1KiB", "0x10", "1e100", "1e99999999", "1\n"]
)
def test_what_the_api_server_cannot_read_is_refused(text: str | int) -> None:
    with pytest.raises(ValueError, match=r"not a Kubernetes quantity|is negative"):
        parse_quantity(text)


def test_equal_amounts_in_different_forms_compare_equal() -> None:
    assert parse_quantity("1Gi") == parse_quantity("1024Mi") == parse_quantity(2**30)
    assert parse_quantity("1") == parse_quantity("1000m") == parse_quantity("1e0")
    assert parse_quantity("1G") < parse_quantity("1Gi")


@pytest.mark.parametrize(
    ("name", "overcommit", "extended"),
    [
        ("cpu", True, False),
        ("memory", True, False),
        ("ephemeral-storage", True, False),
        ("hugepages-2Mi", False, False),
        ("kubernetes.io/anything", True, False),
        ("nvidia.com/gpu", False, True),
        ("nvidia.com/mig-1g.5gb", False, True),
        ("requests.example.com/device", False, False),
    ],
)
def test_which_resources_may_be_overcommitted(name: str, overcommit: bool, extended: bool) -> None:
    assert overcommit_allowed(name) is overcommit
    assert is_extended(name) is extended


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("cpu", None),
        ("hugepages-1Gi", None),
        ("example.com/fpga", None),
        ("kubernetes.io/x", None),
        ("cpus", "not a container resource"),
        ("gpu", "not a container resource"),
        ("requests.cpu", "not a container resource"),
        ("requests.example.com/fpga", "a quota's name"),
        ("a" * 240 + ".io/x", None),
        ("a" * 245 + ".io/x", "a domain of 244 characters at most"),
    ],
)
def test_which_names_a_container_may_ask_for(name: str, problem: str | None) -> None:
    found = container_resource_name_problem(name)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("value", "whole"), [(2, True), ("2", True), ("+2", True), ("1.0", False), ("1k", False), ("2\n", False)]
)
def test_a_device_s_count_is_written_as_a_whole_number(value: int | str, whole: bool) -> None:
    """Digits alone: the API server's CEL isInteger() refuses "1.0" and "1000m" though the pod would take them."""
    assert is_whole_number(value) is whole
