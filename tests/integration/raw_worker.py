"""raw_worker.py -- an in-process-restart worker that speaks the agent's
IPC wire format itself (4-byte big-endian length + one JSON object), with
no client library, as the reference's InProcessRestartSocketClient does on
the wire. For test_operator_contract.py.

Records (one write(2) each, so workers never interleave inside a line):
  raw ready {json}   at start: pid, local_rank and the rank variables of
                     the process environment
  raw msg {json}     every message the agent sent (type, client_id, ...)

Behaviour: connects to $HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH, sends
init, then at_rcb_barrier; on job_start sends past_rcb_barrier; on
job_fault goes back to the barrier. RAW_GATE=PATH ("{local_rank}"
replaced): a FIFO opened for reading before connecting, so the test decides
when this rank connects. RAW_DROP_RANK=L: local rank L closes its connection
right after reaching the barrier and stays alive. RAW_FAULT_MODE=M: local
rank 0 answers its first job_start with a job_fault (reason RawFault,
restart_mode M). Exits when the agent closes the socket, or after
RAW_SAFETY_S seconds (120).
"""
import json
import os
import socket
import struct
import sys
import time
import uuid

LOCAL = int(os.environ.get("LOCAL_RANK", "-1"))
KEYS = ("RANK", "GROUP_RANK", "WORLD_SIZE", "GROUP_WORLD_SIZE", "LOCAL_WORLD_SIZE",
        "MASTER_ADDR", "MASTER_PORT", "SPARE", "JOB_RESTART_COUNT",
        "HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH",
        "HYPERPOD_SIGNAL_COORDINATION")


def emit(kind, rec):
    rec.setdefault("local_rank", LOCAL)
    os.write(1, ("raw %s %s\n" % (kind, json.dumps(rec, sort_keys=True))).encode())


def send(sock, obj):
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def main():
    emit("ready", {"pid": os.getpid(),
                   "env": {k: os.environ.get(k) for k in KEYS}})
    gate = os.environ.get("RAW_GATE", "").replace("{local_rank}", str(LOCAL))
    if gate:
        os.close(os.open(gate, os.O_RDONLY))  # blocks until the test opens it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"])
    cid = str(uuid.uuid4())
    base = {"client_id": cid, "local_rank": LOCAL}
    send(sock, dict(base, type="init"))
    send(sock, dict(base, type="at_rcb_barrier"))
    if os.environ.get("RAW_DROP_RANK") == str(LOCAL):
        sock.close()
        emit("dropped", {})
        time.sleep(float(os.environ.get("RAW_SAFETY_S", "120")))
        return 3
    fault_mode = os.environ.get("RAW_FAULT_MODE") if LOCAL == 0 else None
    sock.settimeout(float(os.environ.get("RAW_SAFETY_S", "120")))
    while True:
        try:
            hdr = recv_exact(sock, 4)
        except socket.timeout:
            return 3
        if hdr is None:
            return 0
        body = recv_exact(sock, struct.unpack("!I", hdr)[0])
        if body is None:
            return 0
        msg = json.loads(body)
        emit("msg", msg)
        if msg.get("type") == "job_start":
            send(sock, dict(base, type="past_rcb_barrier"))
            if fault_mode:
                rank = int(msg["worker_envs"]["RANK"])
                send(sock, dict(base, type="job_fault", rank=rank, reason="RawFault",
                                message="raw fault", restart_mode=fault_mode))
                fault_mode = None
        elif msg.get("type") == "job_fault":
            send(sock, dict(base, type="at_rcb_barrier"))


if __name__ == "__main__":
    sys.exit(main())
