"""Reproducible demo models for trying Esteira end to end: a tabular classifier on iris and a small image
classifier on digits, each as a GOOD version and a deliberately WORSE one, so that a canary of the worse
version has something for the rollout analysis to catch. Data comes from scikit-learn's bundled datasets
(no network); training runs on CPU with fixed seeds. Build with ``python -m model_handlers.demo.build``.
"""
