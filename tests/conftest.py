"""Suite-wide settings: the missing-prerequisite hooks (skips that fail under CI=true), pytester for testing
them, and Hypothesis without per-example deadlines."""

from __future__ import annotations

from hypothesis import settings

pytest_plugins = ["pytester", "tests.support.prerequisites"]

# A deadline measures the machine, not the code: a cold import or a busy core once failed a 200 ms deadline.
settings.register_profile("esteira", deadline=None)
settings.load_profile("esteira")
