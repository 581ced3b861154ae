"""The worker <-> agent IPC of the reference package, by the same names.
Clients (ipc.client) are real; the servers (ipc.server) are the agent's
and only stubs here."""
from .client import (
    CheckpointDiscoverySocketClient,
    InProcessRestartSocketClient,
    TrainingManager,
)
from .common import (
    HyperPodPLRException,
    HyperPodIPCException,
    InProcessRestartSocketMessageType,
    RestartMode,
)
from .server import (
    CheckpointDiscoverySocketServer,
    InProcessRestartSocketServer,
)

__all__ = [
    "CheckpointDiscoverySocketClient",
    "CheckpointDiscoverySocketServer",
    "HyperPodPLRException",
    "HyperPodIPCException",
    "InProcessRestartSocketClient",
    "InProcessRestartSocketMessageType",
    "InProcessRestartSocketServer",
    "RestartMode",
    "TrainingManager",
]
