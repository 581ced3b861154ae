"""The agent's IPC servers. In hyperpodrun they are part of the binary
(rendezvous/ipc.c); these stubs let code that imports them load."""


class _AgentSide:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} runs inside the agent; with hyperpodrun "
            f"the agent is the hyperpodrun binary")


class InProcessRestartSocketServer(_AgentSide):
    """Stub (agent side)."""


class CheckpointDiscoverySocketServer(_AgentSide):
    """Stub (agent side)."""
