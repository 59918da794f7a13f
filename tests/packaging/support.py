"""Helpers shared by the packaging tests."""

from __future__ import annotations

import argparse

from esteira.packaging.cli import add_package_command


def package_cli(argv: list[str]) -> int:
    """`esteira package ARGV` as the `esteira` command wires it (through add_package_command)."""
    parser = argparse.ArgumentParser(prog="esteira")
    add_package_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["package", *argv])
    return int(args.func(args))
