"""The clients training code uses, with the reference's names, arguments,
return shapes and exception texts (shared/research/hyperpod-agent-spec.md
section 4):

  InProcessRestartSocketClient  the in-process-restart barrier and faults
  CheckpointDiscoverySocketClient  checkpoint reports and the latest path
  TrainingManager  one of the first, a factory for the second

Each client object has its own uuid client_id and one queue per message
type it waits for; all share the process's one socket
(BaseIPCSocketClient.socket_client). A wait first drains its queue, so
what it returns arrived for this wait, not an earlier one."""
import queue
import uuid
from abc import ABC

from ..checkpoint_discovery import CheckpointType
from ..logging import get_logger
from .common import (
    BaseIPC,
    CheckpointDiscoverySocketMessageType,
    CommonSocketMessageType,
    HyperPodIPCException,
    InProcessRestartSocketMessageType,
    RestartMode,
)
from .socket import HyperPodElasticAgentSocketClient

logger = get_logger(__name__)


def _timed_out(timeout):
    return HyperPodIPCException(
        f"Timed out reading data from server after {timeout} seconds")


class BaseIPCSocketClient(BaseIPC, ABC):
    """A client_id on the shared socket."""
    socket_client = HyperPodElasticAgentSocketClient()

    def __init__(self):
        self.client_id = str(uuid.uuid4())

    def connect(self):
        """Connects the shared socket (if it is not) and registers this
        client_id for $LOCAL_RANK with an init message."""
        self.socket_client.connect()
        if not self.sendall(CommonSocketMessageType.INIT, {
                "local_rank": self.socket_client.local_rank,
                "client_id": self.client_id,
        }):
            raise ValueError("Failed to send INIT to server")

    def register_message_callback(self, message_type, callback):
        self.socket_client.register_message_callback(message_type, callback,
                                                     self.client_id)

    def register_message_queue(self, message_type, message_queue):
        self.socket_client.register_message_queue(message_type,
                                                  message_queue,
                                                  self.client_id)

    def drain_message_queue(self, message_queue):
        return self.socket_client.drain_message_queue(message_queue)

    def sendall(self, message_type, message):
        return self.socket_client.sendall(message_type, message,
                                          self.client_id)


class CheckpointDiscoverySocketClient(BaseIPCSocketClient):
    """Tells the agent which checkpoints this rank wrote, and asks it for
    the latest one every rank completed (the one to resume from).

    prefix names the checkpoint series; num_model_checkpoints /
    num_data_checkpoints say how many ranks on this node write each type
    (a checkpoint is complete when that many reported it)."""

    def __init__(self, prefix, num_model_checkpoints=0,
                 num_data_checkpoints=0):
        super().__init__()
        self.prefix = prefix
        self.num_model_checkpoints = num_model_checkpoints
        self.num_data_checkpoints = num_data_checkpoints
        self._get_latest_queue = queue.Queue()
        self.register_message_queue(
            CheckpointDiscoverySocketMessageType.CKPT_INFO_GET,
            self._get_latest_queue)
        self.connect()
        if not self.sendall(CheckpointDiscoverySocketMessageType.CKPT_INIT, {
                "prefix": prefix,
                "checkpoint_types": {
                    CheckpointType.MODEL_CHECKPOINT:
                        self.num_model_checkpoints,
                    CheckpointType.DATA_CHECKPOINT:
                        self.num_data_checkpoints,
                },
        }):
            raise ValueError(
                f"Failed to register checkpoint client with {prefix=} with "
                f"the HyperPodElasticAgent")
        logger.info("%r connected to %s", self,
                    self.socket_client.server_socket_path)

    def __repr__(self):
        return (f"CheckpointDiscoverySocketClient({self.prefix=}, "
                f"{self.num_model_checkpoints=}, "
                f"{self.num_data_checkpoints=})")

    def update(self, step, path, checkpoint_type):
        """Reports that this rank wrote checkpoint_type for step at
        path."""
        if not self.sendall(
                CheckpointDiscoverySocketMessageType.CKPT_INFO_UPDATE, {
                    "step": step,
                    "path": path,
                    "checkpoint_type": checkpoint_type,
                }):
            raise HyperPodIPCException(
                f"Failed to update HyperPodElasticAgent with the latest "
                f"{step=}, {path=}, {checkpoint_type=} info.")

    def get_latest_checkpoint_path(self):
        """The path of the newest complete checkpoint, or None. Blocks
        until the agent answers (the reference sets no timeout)."""
        self.drain_message_queue(self._get_latest_queue)
        if not self.sendall(CheckpointDiscoverySocketMessageType.CKPT_INFO_GET,
                            {}):
            raise HyperPodIPCException(
                "Failed to request latest checkpoint from agent.")
        try:
            _, msg = self._get_latest_queue.get(block=True)
        except queue.Empty:
            raise HyperPodIPCException("Failed to read data from server.")
        return msg.get("path")


class InProcessRestartSocketClient(BaseIPCSocketClient):
    """The in-process restart protocol, seen from one rank: connects (and
    sends init) in the constructor, as the checkpointless library expects
    at import time. Waits return (message_type, payload) tuples, e.g.
    ("job_start", {"worker_envs": {...}, "aggregate_worker_data": {...}})
    and raise HyperPodIPCException when timeout (seconds) passes first."""

    def __init__(self):
        super().__init__()
        self._hyperpod_barrier_queue = queue.Queue()
        self._hyperpod_wait_fault_queue = queue.Queue()
        self._hyperpod_wait_rank_queue = queue.Queue()
        self.register_message_queue(
            InProcessRestartSocketMessageType.JOB_START,
            self._hyperpod_barrier_queue)
        self.register_message_queue(
            InProcessRestartSocketMessageType.JOB_FAULT,
            self._hyperpod_wait_fault_queue)
        self.register_message_queue(
            InProcessRestartSocketMessageType.JOB_RANK_INFO,
            self._hyperpod_wait_rank_queue)
        self.connect()
        logger.info("%s connected to %s", type(self).__name__,
                    self.socket_client.server_socket_path)

    def hyperpod_barrier(self, timeout=None):
        """Tells the agent this rank is at the barrier and waits for the
        job_start that releases it; returns ("job_start", payload). The
        caller sends hyperpod_past_rcb_barrier() once it started."""
        # Drained before at_rcb_barrier goes out, not after as in the
        # reference: the agent may answer the last rank's at_rcb_barrier
        # at once, and a drain after the send could drop that job_start.
        self.drain_message_queue(self._hyperpod_barrier_queue)
        if not self.sendall(InProcessRestartSocketMessageType.AT_RCB_BARRIER,
                            {}):
            raise HyperPodIPCException(
                "Failed to communicate barrier to server")
        try:
            response = self._hyperpod_barrier_queue.get(block=True,
                                                        timeout=timeout)
        except queue.Empty:
            raise _timed_out(timeout)
        logger.info("Barrier cleared")
        return response

    def hyperpod_wait_fault(self, timeout=None):
        """Waits for the next job_fault (faults queued before the call are
        dropped); returns ("job_fault", {"restart_count": n})."""
        self.drain_message_queue(self._hyperpod_wait_fault_queue)
        try:
            return self._hyperpod_wait_fault_queue.get(block=True,
                                                       timeout=timeout)
        except queue.Empty:
            raise _timed_out(timeout)

    def hyperpod_wait_rank_info(self, timeout=None):
        """The newest job_rank_info queued since the last call, else the
        next one; returns ("job_rank_info", payload)."""
        messages = self.drain_message_queue(self._hyperpod_wait_rank_queue)
        if messages:
            return messages[-1]
        try:
            return self._hyperpod_wait_rank_queue.get(block=True,
                                                      timeout=timeout)
        except queue.Empty:
            raise _timed_out(timeout)

    def hyperpod_send_data(self, rank, data):
        """Attaches data (a string) to this rank; the operator sees it in
        /status worker_data and sends the aggregate back in job_start and
        job_rank_info."""
        if not self.sendall(InProcessRestartSocketMessageType.JOB_DATA, {
                "rank": rank,
                "data": data,
        }):
            raise HyperPodIPCException("Failed to send data to Agent")

    def hyperpod_send_fault(self, rank, restart_mode=RestartMode.IN_PROCESS_RESTART,
                            reason=None, message=None):
        """Reports a failure of this rank and the restart it needs."""
        if not self.sendall(InProcessRestartSocketMessageType.JOB_FAULT, {
                "rank": rank,
                "restart_mode": restart_mode,
                "reason": reason,
                "message": message,
        }):
            raise HyperPodIPCException("Failed to send job_fault to Agent")

    def hyperpod_past_rcb_barrier(self):
        """Tells the agent this rank left the barrier and runs."""
        if not self.sendall(InProcessRestartSocketMessageType.PAST_RCB_BARRIER,
                            {}):
            raise HyperPodIPCException(
                "Failed to notify Agent of passing the RCB barrier")

    def hyperpod_notify_labels(self, labels):
        """Sets the node's rank labels (a str -> str map, e.g. the PP rank)
        shown in /status rank_labels."""
        if not self.sendall(InProcessRestartSocketMessageType.RANK_LABELS, {
                "labels": labels,
        }):
            raise HyperPodIPCException(
                "Failed to notify Agent of current labels")


class TrainingManager:
    """An InProcessRestartSocketClient (.InProcessRestart) and a factory
    for checkpoint discovery clients."""

    def __init__(self):
        self.InProcessRestart = InProcessRestartSocketClient()

    @staticmethod
    def get_checkpoint_discovery_client(prefix, num_model_checkpoints=0,
                                        num_data_checkpoints=0):
        return CheckpointDiscoverySocketClient(prefix, num_model_checkpoints,
                                               num_data_checkpoints)
