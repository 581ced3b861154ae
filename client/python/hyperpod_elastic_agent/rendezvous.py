"""The reference's torch rendezvous backend ("hyperpod") runs inside its
agent; hyperpodrun's agent does that in C. The names exist so that code
importing them (or the package's top level) loads; constructing the
backend raises NotImplementedError."""


class HyperpodRendezvousException(Exception):
    """Raised by the reference's rendezvous backend; kept so that except
    clauses naming it still work."""


class HyperPodRendezvousBackend:
    """Stub: the rendezvous is hyperpodrun's (the binary), not Python's."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "HyperPodRendezvousBackend runs inside the agent; with "
            "hyperpodrun the agent is the hyperpodrun binary")
