"""Suite-wide settings: the missing-prerequisite hooks (skips that fail under CI=true), pytester for testing
them, Hypothesis without per-example deadlines, and a quick-starting JVM for the TorchServes `esteira up` starts."""

from __future__ import annotations

import os

from hypothesis import settings

from esteira.vocabulary import ENV_TORCHSERVE_VMARGS
from tests.support.torchserve import QUICK_START_VMARGS

pytest_plugins = ["pytester", "tests.support.prerequisites"]

# A deadline measures the machine, not the code: a cold import or a busy core once failed a 200 ms deadline.
settings.register_profile("esteira", deadline=None)
settings.load_profile("esteira")

# `esteira up` under test starts many TorchServes and never runs one warm: the quick-starting JVM, not its default.
os.environ.setdefault(ENV_TORCHSERVE_VMARGS, QUICK_START_VMARGS)
