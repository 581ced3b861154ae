"""The worker's end of the agent's AF_UNIX socket, shared by every client
object in the process (a singleton, as in the reference): one connection,
one reader thread, and for each (message type, client_id) the queues and
callbacks that receive the agent's messages. Framing and JSON are
hyperpod_worker's, so both faces send the same bytes.

Never here: the agent's server end (HyperPodElasticAgentSocketServer is a
stub; hyperpodrun's agent is C)."""
import copy
import os
import socket
import threading
from collections import defaultdict
from queue import Empty

import hyperpod_worker as _wire

from ..logging import get_logger
from .common import BaseIPC

logger = get_logger(__name__)
DEFAULT = "DEFAULT"
SOCKET_ENV = _wire.SOCKET_ENV


class HyperPodElasticAgentSocket(BaseIPC):
    """Queues and callbacks keyed by (message_type, client_id)."""

    def __init__(self):
        self._event_loop_thread = None
        self._message_queues = defaultdict(list)
        self._message_callbacks = defaultdict(list)
        self._queue_lock = threading.Lock()
        self.running = False

    def register_message_callback(self, message_type, callback,
                                  client_id=DEFAULT):
        """callback(payload) runs on the reader thread for every message
        of message_type addressed to client_id."""
        self._message_callbacks[(message_type, client_id)].append(callback)

    def register_message_queue(self, message_type, message_queue,
                               client_id=DEFAULT):
        """(message_type, payload) of every such message goes on
        message_queue."""
        self._message_queues[(message_type, client_id)].append(message_queue)

    def drain_message_queue(self, message_queue):
        """Empties message_queue (under the lock the reader puts with) and
        returns what it held, oldest first."""
        messages = []
        with self._queue_lock:
            while not message_queue.empty():
                try:
                    messages.append(message_queue.get_nowait())
                except Empty:
                    break
        return messages


class HyperPodElasticAgentSocketServer(HyperPodElasticAgentSocket):
    """Stub: the agent's end is the hyperpodrun binary."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "HyperPodElasticAgentSocketServer runs inside the agent; with "
            "hyperpodrun the agent is the hyperpodrun binary")


class HyperPodElasticAgentSocketClient(HyperPodElasticAgentSocket):
    """One connection to $HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH per
    process. connect() is a no-op while connected; after the agent closed
    the connection the next connect() dials again."""
    _singleton_instance = None

    def __new__(cls, *args, **kwargs):
        if cls._singleton_instance is None:
            cls._singleton_instance = super().__new__(cls)
        return cls._singleton_instance

    def __init__(self):
        # A second HyperPodElasticAgentSocketClient() returns the same
        # object; keep its registrations.
        if getattr(self, "_initialised", False):
            return
        super().__init__()
        self._initialised = True
        self._sock = None
        self._send_lock = threading.Lock()
        self.server_socket_path = ""

    @property
    def local_rank(self):
        return int(os.getenv("LOCAL_RANK", "0"))

    def connect(self, timeout=60):
        """Dials the agent (timeout in seconds for the connect itself) and
        starts the reader thread. Raises ValueError without the socket
        variable, OSError when the agent is not there."""
        if self.running:
            return True
        self.server_socket_path = os.getenv(SOCKET_ENV, "")
        if not self.server_socket_path:
            raise ValueError(
                f"{SOCKET_ENV} not set. Can't initialize client")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.server_socket_path)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.running = True
        self._event_loop_thread = threading.Thread(
            target=self._run_client, args=(sock,),
            name="hyperpod-elastic-agent-ipc", daemon=True)
        self._event_loop_thread.start()
        return True

    def disconnect(self):
        """Closes the connection and waits for the reader to end."""
        self.running = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        t = self._event_loop_thread
        if t is not None and t is not threading.current_thread() \
                and t.is_alive():
            t.join()

    def sendall(self, message_type, message, client_id):
        """Sends one message; True when it was written whole, False (and
        an error log) when it could not be (not connected, a broken
        connection, a message over the frame limit). Never waits for an
        answer."""
        try:
            data = _wire.encode_message(message_type, message,
                                        self.local_rank, client_id)
            sock = self._sock
            if sock is None:
                raise BrokenPipeError("not connected to the agent")
            with self._send_lock:
                sock.sendall(data)
            return True
        except OSError as ex:
            logger.error("Failed to send %s from local_rank=%d: %s",
                         getattr(message_type, "value", message_type),
                         self.local_rank, ex)
            return False

    def _dispatch(self, body):
        decoded = _wire.decode_message(body)
        if decoded is None:
            logger.warning("Invalid message from the agent. Ignoring.")
            return
        msg_type, client_id, msg = decoded
        key = (msg_type, client_id)
        with self._queue_lock:
            for q in self._message_queues.get(key, []):
                q.put((msg_type, copy.deepcopy(msg)))
        for cb in self._message_callbacks.get(key, []):
            try:
                cb(copy.deepcopy(msg))
            except RuntimeError as ex:
                logger.error("Exception in executing callback=%s for "
                             "type=%s: %s", cb, msg_type, ex)

    def _run_client(self, sock):
        decoder = _wire.FrameDecoder()
        while True:
            try:
                data = sock.recv(65536)
            except InterruptedError:
                continue
            except OSError as ex:
                if self._sock is sock:
                    logger.error("Socket error: %s", ex)
                break
            if not data:
                if self._sock is sock:
                    logger.error("Server connection closed")
                break
            for body in decoder.feed(data):
                self._dispatch(body)
            if decoder.error is not None:
                logger.error("Socket error: %s", decoder.error)
                break
        # The agent went away (or disconnect() ran): the next connect()
        # dials again; sends fail until then.
        if self._sock is sock:
            self.running = False
            self._sock = None
            try:
                sock.close()
            except OSError:
                pass
