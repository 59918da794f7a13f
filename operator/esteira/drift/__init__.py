"""Drift maths: the reference profile, fixed bins, distances and sample-size-aware tests, verdicts.

Pure and dependency-free beyond pydantic: the model server bins with it, the operator and `esteira up`
judge with it, and `esteira profile` writes the profile it reads.
"""
