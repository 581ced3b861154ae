"""elastic_event_detected(): has this worker been told of a scale event?

The operator asks for an elastic scale-up or -down with a graceful /stop;
the agent sends SIGUSR1 to every worker (and SIGKILL after the stop's
timeout). Importing this module installs a SIGUSR1 handler that records
the signal. HYPERPOD_SIGNAL_COORDINATION, read at import as the
reference does: "disabled" (the default) -> elastic_event_detected() is
always False; "distributed" -> the local flag, all-reduced with MAX over
torch.distributed when a process group is initialised, so every rank
answers the same at the same step (each rank must call it equally often,
like any collective). Anything else logs a warning and means "disabled".
"""
import os
import signal

from .logging import get_logger

logger = get_logger(__name__)

# signal number -> received since import
_signal_received = {}

_VALID_COORDINATION_MODES = {"disabled", "distributed"}

_raw_mode = os.getenv("HYPERPOD_SIGNAL_COORDINATION", "disabled").lower()
if _raw_mode in _VALID_COORDINATION_MODES:
    _SIGNAL_COORDINATION_MODE = _raw_mode
else:
    logger.warning(
        'Invalid HYPERPOD_SIGNAL_COORDINATION value: "%s". Valid values '
        'are: %s. Defaulting to "disabled".', _raw_mode,
        ", ".join(sorted(_VALID_COORDINATION_MODES)))
    _SIGNAL_COORDINATION_MODE = "disabled"
logger.info("Signal coordination mode set to: %s", _SIGNAL_COORDINATION_MODE)


def _signal_handler(signum, frame):
    # Only a flag: the training loop decides what to do at its next step.
    _signal_received[signum] = True
    logger.info("%s received%s", signal.strsignal(signum) or f"SIG{signum}",
                " - elastic event detected" if signum == signal.SIGUSR1
                else "")


# SIGTERM stays torch's (torchrun semantics); SIGUSR1 is the elastic event.
signal.signal(signal.SIGUSR1, _signal_handler)
_signal_received[signal.SIGUSR1] = False


def elastic_event_detected(sig=signal.SIGUSR1):
    """True once SIGUSR1 arrived (on any rank, in "distributed" mode with
    torch.distributed initialised). Call it from the training loop, not
    from the agent."""
    if sig != signal.SIGUSR1:
        return False
    if _SIGNAL_COORDINATION_MODE == "disabled":
        return False
    local = _signal_received.get(sig, False)
    if _SIGNAL_COORDINATION_MODE != "distributed":
        logger.warning('Invalid HYPERPOD_SIGNAL_COORDINATION mode: %s. Use '
                       '"disabled" or "distributed"',
                       _SIGNAL_COORDINATION_MODE)
        return False
    try:
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            return local
        device = (torch.device(f"cuda:{torch.cuda.current_device()}")
                  if torch.cuda.is_available() else torch.device("cpu"))
        flag = torch.tensor([1.0 if local else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0
    except Exception as e:  # no torch, a broken group: the local answer
        logger.warning("Error in distributed event check: %s", e)
        return local
