"""Serving benchmarks: ``make bench`` runs :mod:`benchmarks.serving` and writes ``benchmarks/results/``."""
