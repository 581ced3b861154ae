"""hyperpod_worker -- the worker side of hyperpodrun's in-process restart IPC.

Pure standard library (socket, struct, json, os, select, threading), so any
training script can copy or import it. It speaks the reference HyperPod
agent's wire format byte for byte (shared/PROTOCOL.md, "Worker IPC"): each
message is a 4-byte big-endian length and a json.dumps() object whose keys
come in the reference's order, so the agent cannot tell this client from the
reference worker library, and libhyperpod (C) sends the very same bytes.

Typical use::

    from hyperpod_worker import AgentClient, restartable

    @restartable
    def train(client):
        for step in range(steps):
            client.check()          # raises FaultInterrupt after a job_fault
            ...

    train()                         # barrier -> run -> fault -> barrier ...

The wire format (encode_message, FrameDecoder, decode_message) is written
once, here: the hyperpod_elastic_agent compatibility package, which
offers the reference's own API over the same socket, uses it too.

One daemon thread per client reads the socket; it queues agent
notifications for poll_event() (fileno() is readable while any wait) and
runs on_fault() callbacks.
"""

import collections
import errno
import functools
import json
import logging
import os
import select
import socket
import struct
import threading
import uuid

__all__ = [
    "AgentClient",
    "Event",
    "FrameDecoder",
    "FaultInterrupt",
    "HyperPodIPCError",
    "MAX_FRAME",
    "SOCKET_ENV",
    "decode_message",
    "encode_message",
    "frame",
    "restartable",
]

SOCKET_ENV = "HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"
# The reference sets no limit; we drop a connection whose frames exceed it.
MAX_FRAME = 1 << 20
# Queued events kept for poll_event(); past this the oldest goes, so a
# worker that only uses on_fault() does not grow for ever.
MAX_QUEUED = 1024

RESTART_MODES = (
    "in_process_restart",
    "process_level_restart",
    "job_level_restart",
    "local_process_level_restart",
)

log = logging.getLogger("hyperpod_worker")


class HyperPodIPCError(RuntimeError):
    """The agent connection failed, broke, or a wait timed out."""


class FaultInterrupt(Exception):
    """Raised by AgentClient.check() after the agent announced a fault:
    abandon the current step and go back to the barrier."""

    def __init__(self, restart_count):
        super().__init__(f"job_fault from agent (restart_count={restart_count})")
        self.restart_count = restart_count


class Event:
    """One notification from the agent.

    kind: "fault", "rank_info", "start", "failed_ranks" or
    "invalid_response"; restart_count (fault; None when absent); env (the
    worker_envs map for rank_info/start); aggregate_worker_data; body (the
    message without type and client_id).
    """

    __slots__ = ("kind", "restart_count", "env", "aggregate_worker_data", "body")

    def __init__(self, kind, body):
        self.kind = kind
        self.body = body
        rc = body.get("restart_count")
        self.restart_count = rc if isinstance(rc, int) else None
        envs = body.get("worker_envs")
        self.env = _env_strings(envs) if isinstance(envs, dict) else None
        self.aggregate_worker_data = body.get("aggregate_worker_data")

    def __repr__(self):
        return f"Event({self.kind!r}, {self.body!r})"


_KINDS = {
    "job_fault": "fault",
    "job_rank_info": "rank_info",
    "job_start": "start",
    "job_failed_ranks": "failed_ranks",
    "invalid_response": "invalid_response",
}


def _env_strings(envs):
    # Same text as libhyperpod: strings as they are, null as "", anything
    # else as compact JSON.
    out = {}
    for k, v in envs.items():
        if isinstance(v, str):
            out[k] = v
        elif v is None:
            out[k] = ""
        else:
            out[k] = json.dumps(v, separators=(",", ":"))
    return out


def frame(payload):
    """bytes of one frame: 4-byte big-endian length + payload."""
    return struct.pack("!I", len(payload)) + payload


# --- the wire format, once for both faces (this module and the
# hyperpod_elastic_agent compatibility package) ---------------------------

def encode_message(msg_type, payload, local_rank, client_id):
    """The framed bytes of one worker -> agent message, as the reference's
    sendall builds them: the payload's own keys, then type, local_rank and
    client_id (keys already present keep their place), json.dumps() with
    its default separators. Raises OSError(EMSGSIZE) over MAX_FRAME."""
    msg = dict(payload)
    msg["type"] = msg_type
    msg["local_rank"] = local_rank
    msg["client_id"] = client_id
    data = json.dumps(msg).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise OSError(errno.EMSGSIZE,
                      f"{msg_type} message of {len(data)} bytes is over "
                      f"the {MAX_FRAME}-byte limit")
    return frame(data)


class FrameDecoder:
    """Splits a byte stream into frame payloads: feed() what recv()
    returned, get the complete payloads (several frames may come in one
    read, one frame across several). A length over MAX_FRAME sets .error
    (OSError(EMSGSIZE)): feed() still returns the frames before it, and
    raises .error from then on, as the stream cannot be trusted after
    it."""

    def __init__(self):
        self.buffer = bytearray()
        self.error = None

    def feed(self, data):
        if self.error is not None:
            raise self.error
        self.buffer += data
        out = []
        while len(self.buffer) >= 4:
            (n,) = struct.unpack("!I", self.buffer[:4])
            if n > MAX_FRAME:
                self.error = OSError(errno.EMSGSIZE,
                                     f"agent sent a {n}-byte frame, over "
                                     f"the {MAX_FRAME}-byte limit")
                break
            if len(self.buffer) < 4 + n:
                break
            out.append(bytes(self.buffer[4:4 + n]))
            del self.buffer[:4 + n]
        return out


def decode_message(body):
    """(type, client_id, rest) of one agent -> worker payload, or None when
    it is not a JSON object with both (the reference skips those)."""
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        log.warning("skipping a malformed message from the agent")
        return None
    if not isinstance(msg, dict):
        return None
    msg_type = msg.pop("type", None)
    client_id = msg.pop("client_id", None)
    if not msg_type or not client_id:
        return None
    return msg_type, client_id, msg


class AgentClient:
    """A connection to the agent's IPC socket.

    path: default $HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH; local_rank:
    default int($LOCAL_RANK or 0); client_id: default str(uuid.uuid4()) --
    all as the reference worker library chooses them.
    """

    def __init__(self, path=None, local_rank=None, client_id=None):
        if path is None:
            path = os.environ.get(SOCKET_ENV, "")
        if not path:
            raise ValueError(f"{SOCKET_ENV} not set. Can't initialize client")
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.path = path
        self.local_rank = int(local_rank)
        self.client_id = client_id if client_id is not None else str(uuid.uuid4())
        self.env = {}
        self.aggregate_worker_data = None
        self.restart_count = 0

        self._sock = None
        self._send_lock = threading.Lock()
        self._lock = threading.Condition()
        self._events = collections.deque(maxlen=MAX_QUEUED)
        self._broken = None          # an OSError once the connection broke
        self._waiting = False        # a wait_at_barrier is armed
        self._start = None           # the job_start that released it
        self._fault = None           # restart_count of a fault since release
        self._fault_cbs = []
        self._evr, self._evw = os.pipe()  # readable while events are queued
        self._ev_set = False
        self._stopr, self._stopw = os.pipe()
        self._thread = None

    # ------------------------------------------------------------ lifetime
    def connect(self):
        """Connects, sends "init" and starts the reader thread. Returns self."""
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        # init must be the first frame, before the reader can react.
        self._send("init", {"local_rank": self.local_rank,
                            "client_id": self.client_id})
        self._thread = threading.Thread(target=self._reader,
                                        name="hyperpod-worker-ipc",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self):
        """Stops the reader thread and closes the socket; idempotent."""
        if self._thread is not None:
            os.write(self._stopw, b"x")
            if self._thread is not threading.current_thread():
                self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for fd in (self._evr, self._evw, self._stopr, self._stopw):
            if fd >= 0:
                os.close(fd)
        self._evr = self._evw = self._stopr = self._stopw = -1

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------- sending
    def _send(self, msg_type, payload):
        # The reference's sendall: the payload's own keys, then type,
        # local_rank and client_id (already present keys keep their place).
        data = encode_message(msg_type, payload, self.local_rank,
                              self.client_id)
        if self._sock is None:
            raise HyperPodIPCError("not connected")
        with self._send_lock:
            self._sock.sendall(data)

    def _rank(self, rank):
        return int(os.environ.get("RANK", "0")) if rank is None else int(rank)

    def report_fault(self, reason=None, message=None,
                     restart_mode="in_process_restart", rank=None):
        """Sends job_fault for this worker's global rank (default $RANK)."""
        self._send("job_fault", {
            "rank": self._rank(rank),
            "restart_mode": restart_mode or "in_process_restart",
            "reason": reason,
            "message": message,
        })

    def send_data(self, data, rank=None):
        """Sends job_data. The reference types data as a string; anything
        else is sent as its json.dumps() text."""
        if not isinstance(data, str) and data is not None:
            data = json.dumps(data)
        self._send("job_data", {"rank": self._rank(rank), "data": data})

    def send_labels(self, labels):
        """Sends rank_labels with a str -> str mapping."""
        self._send("rank_labels", {"labels": dict(labels)})

    # ------------------------------------------------------------- barrier
    def wait_at_barrier(self, timeout=None):
        """Sends at_rcb_barrier, blocks until job_start (timeout in seconds,
        None for ever), sends past_rcb_barrier and returns the new rank env
        (also applied to os.environ). Faults heard before the release belong
        to the run that ended and are dropped."""
        with self._lock:
            if self._broken is not None:
                raise HyperPodIPCError(str(self._broken)) from self._broken
            self._start = None
            self._waiting = True
        try:
            self._send("at_rcb_barrier", {})
            with self._lock:
                ok = self._lock.wait_for(
                    lambda: self._start is not None or self._broken is not None,
                    timeout)
                start, self._start = self._start, None
                if start is None:
                    if not ok:
                        raise HyperPodIPCError(
                            f"Timed out reading data from server after "
                            f"{timeout} seconds")
                    raise HyperPodIPCError(str(self._broken)) from self._broken
        finally:
            with self._lock:
                self._waiting = False
        self._send("past_rcb_barrier", {})
        env = start.env or {}
        os.environ.update(env)
        self.env = env
        self.aggregate_worker_data = start.aggregate_worker_data
        try:
            self.restart_count = int(env.get("JOB_RESTART_COUNT",
                                             self.restart_count))
        except ValueError:
            pass
        return dict(env)

    # ------------------------------------------------------- notifications
    def fileno(self):
        """A descriptor that selects readable while events are queued or the
        connection broke (never read it)."""
        return self._evr

    def poll_event(self):
        """The oldest queued Event, or None. Never blocks. Raises
        HyperPodIPCError once the connection broke and nothing is queued."""
        with self._lock:
            ev = self._events.popleft() if self._events else None
            broken = self._broken
            self._sync_fd()
        if ev is None and broken is not None:
            raise HyperPodIPCError(str(broken)) from broken
        return ev

    def on_fault(self, callback):
        """callback(restart_count) runs on the reader (daemon) thread for
        every job_fault, besides the queued event. Keep it short."""
        with self._lock:
            self._fault_cbs.append(callback)

    def wait_fault(self, timeout=None):
        """Blocks until the agent announced a fault since the barrier was
        released (or timeout seconds pass); returns its restart_count, or
        None on timeout. For code whose collective just failed: a peer's
        fault usually explains it, and the agent says so shortly."""
        with self._lock:
            self._lock.wait_for(lambda: self._fault is not None or
                                self._broken is not None, timeout)
            return self._fault

    @property
    def fault_pending(self):
        with self._lock:
            return self._fault is not None

    def check(self):
        """The training loop's check point: raises FaultInterrupt when the
        agent announced a fault since the barrier was released, and
        HyperPodIPCError when the connection broke."""
        with self._lock:
            fault, broken = self._fault, self._broken
        if fault is not None:
            raise FaultInterrupt(fault)
        if broken is not None:
            raise HyperPodIPCError(str(broken)) from broken

    # -------------------------------------------------------- reader thread
    def _sync_fd(self):
        # Called under the lock: the pipe holds one byte iff events wait or
        # the connection broke, so select() on fileno() is level-triggered.
        want = bool(self._events) or self._broken is not None
        if want and not self._ev_set:
            os.write(self._evw, b"e")
        elif not want and self._ev_set:
            os.read(self._evr, 1)
        self._ev_set = want

    def _reader(self):
        decoder = FrameDecoder()
        err = None
        while True:
            try:
                r, _, _ = select.select([self._sock, self._stopr], [], [])
            except InterruptedError:
                continue
            if self._stopr in r:
                return
            try:
                chunk = self._sock.recv(65536)
            except InterruptedError:
                continue
            except OSError as e:
                err = e
                break
            if not chunk:
                err = ConnectionResetError(errno.ECONNRESET,
                                           "agent closed the connection")
                break
            for body in decoder.feed(chunk):
                self._handle(body)
            if decoder.error is not None:
                err = decoder.error
                break
        with self._lock:
            # Under the lock: whoever sees the hang-up also sees why.
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._broken = err
            self._sync_fd()
            self._lock.notify_all()

    def _handle(self, body):
        # Like the reference: invalid JSON, and messages without type or
        # client_id, are skipped; so are other clients' messages.
        decoded = decode_message(body)
        if decoded is None:
            return
        msg_type, client_id, msg = decoded
        if msg_type not in _KINDS or client_id != self.client_id:
            return
        ev = Event(_KINDS[msg_type], msg)
        callbacks = ()
        with self._lock:
            if ev.kind == "start" and self._waiting:
                self._start = ev
                self._fault = None
                self._events = collections.deque(
                    (e for e in self._events if e.kind != "fault"),
                    maxlen=MAX_QUEUED)
                self._lock.notify_all()
            else:
                if ev.kind == "fault":
                    self._fault = ev.restart_count
                    callbacks = list(self._fault_cbs)
                    self._lock.notify_all()
                self._events.append(ev)
            self._sync_fd()
        for cb in callbacks:
            try:
                cb(ev.restart_count)
            except Exception:  # a callback must not kill the reader
                log.exception("on_fault callback failed")


def restartable(fn=None, *, client=None, timeout=None):
    """Runs fn(client, *args, **kwargs) in an in-process restart loop: wait
    at the barrier, run; when fn raises, report the fault (reason = the
    exception's class name, message = its text) and go back to the
    barrier; a FaultInterrupt (from client.check()) goes back without a
    report. Returns fn's result once a run completes. Usable as @restartable
    or restartable(client=c)(fn)."""

    def wrap(f):
        @functools.wraps(f)
        def run(*args, **kwargs):
            c = client if client is not None else AgentClient().connect()
            while True:
                c.wait_at_barrier(timeout)
                try:
                    return f(c, *args, **kwargs)
                except FaultInterrupt:
                    continue
                except (HyperPodIPCError, KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # the training code failed
                    log.warning("run failed, reporting fault: %r", e)
                    c.report_fault(type(e).__name__, str(e))
        return run

    return wrap(fn) if fn is not None else wrap
