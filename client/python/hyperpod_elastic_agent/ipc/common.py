"""Message types, restart modes and exceptions of the IPC. The enums are
str Enums: a member equals its wire string ("job_start" ==
InProcessRestartSocketMessageType.JOB_START) and json.dumps() writes the
string."""
from abc import ABC, abstractmethod
from enum import Enum


class BaseIPC(ABC):
    """What both ends of the IPC offer: one queue per message type."""

    @abstractmethod
    def register_message_queue(self, message_type, message_queue):
        """Put (type, payload) of every message of message_type on
        message_queue."""

    @abstractmethod
    def drain_message_queue(self, message_queue):
        """Empty message_queue before a wait; returns what it held."""


class HyperPodIPCException(RuntimeError):
    """An IPC send failed, or a wait timed out."""


class HyperPodPLRException(RuntimeError):
    """The agent's in-process restart needs a process-level restart."""


class SocketMessageType(str, Enum):
    pass


class CommonSocketMessageType(SocketMessageType):
    INIT = "init"
    INVALID_RESPONSE = "invalid_response"


class InProcessRestartSocketMessageType(SocketMessageType):
    AT_RCB_BARRIER = "at_rcb_barrier"
    JOB_DATA = "job_data"
    JOB_FAILED_RANKS = "job_failed_ranks"
    JOB_FAULT = "job_fault"
    JOB_RANK_INFO = "job_rank_info"
    JOB_START = "job_start"
    PAST_RCB_BARRIER = "past_rcb_barrier"
    RANK_LABELS = "rank_labels"


class CheckpointDiscoverySocketMessageType(SocketMessageType):
    CKPT_INFO_GET = "ckpt_info_get"
    CKPT_INFO_UPDATE = "ckpt_info_update"
    CKPT_INIT = "ckpt_init"


class RestartMode(str, Enum):
    """What a worker's job_fault asks for.

    IN_PROCESS_RESTART: the default; healthy ranks go back to the barrier.
    PROCESS_LEVEL_RESTART: every node's processes restart (the operator
    decides, told through /status restartMode). JOB_LEVEL_RESTART: the
    operator's last resort. LOCAL_PRL: this node's agent restarts its own
    processes, the operator is not asked."""
    IN_PROCESS_RESTART = "in_process_restart"
    JOB_LEVEL_RESTART = "job_level_restart"
    LOCAL_PRL = "local_process_level_restart"
    PROCESS_LEVEL_RESTART = "process_level_restart"
