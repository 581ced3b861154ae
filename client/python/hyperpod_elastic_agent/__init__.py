"""hyperpod_elastic_agent -- hyperpodrun's stand-in for the Python package
of the same name that AWS's HyperPod elastic agent ships.

Training code written for the reference agent imports these names; they
talk to hyperpodrun's agent over the same IPC socket and wire format
(shared/PROTOCOL.md, "Worker IPC"). Everything that runs inside the agent
in the reference (socket servers, the rendezvous backend) is hyperpodrun's
C binary here: those names exist so that imports work, and raise
NotImplementedError when constructed (README, "Python API").
"""
from .rendezvous import (
    HyperpodRendezvousException,
    HyperPodRendezvousBackend,
)
from .ipc import (
    CheckpointDiscoverySocketClient,
    InProcessRestartSocketClient,
    InProcessRestartSocketMessageType,
    RestartMode,
    TrainingManager,
)

__all__ = [
    "CheckpointDiscoverySocketClient",
    "HyperPodRendezvousBackend",
    "HyperpodRendezvousException",
    "InProcessRestartSocketClient",
    "InProcessRestartSocketMessageType",
    "RestartMode",
    "TrainingManager",
]


def _version():
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("hyperpodrun")
        except PackageNotFoundError:
            return "0+source"
    except ImportError:  # pragma: no cover - Python < 3.8
        return "0+source"


# The wheel's version, which is hyperpodrun's own (meson project version).
__version__ = _version()
