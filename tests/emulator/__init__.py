"""A Kubernetes API emulator for end-to-end tests, built on kmock, served over real HTTP on 127.0.0.1.

Typical use in a synchronous test (or through the fixtures in ``fixtures.py``)::

    with EmulatorServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        ...                                   # the operator and the test use the kubeconfig
        server.set_faults(error_rate=0.2, seed=1)  # only requests from the operator are faulted
"""

from .emulator import KubeEmulator
from .faults import FaultDecision, FaultInjector, FaultPlan
from .server import EmulatorServer

__all__ = ["EmulatorServer", "FaultDecision", "FaultInjector", "FaultPlan", "KubeEmulator"]
