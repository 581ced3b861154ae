"""bench_ipr_worker.py -- the workers of bench_ipr.py (not a test).

BENCH_KIND=fault (default): a training process that imports torch at start
(BENCH_IMPORT, default "torch"; "" for none), connects to the agent with
client/python/hyperpod_worker.py and, after every barrier release, prints
  bench resume rank R rc C t T pid P
(T = time.monotonic(), system-wide, right after the release). While the
restart count C < BENCH_FAULTS, rank 0 fails at once:
  bench fault rank 0 rc C t T
BENCH_MODE=ipr: it raises (restartable reports job_fault, back to the
barrier; the others hear the agent's job_fault and go back too);
BENCH_MODE=plr: the process exits 1 (the agent kills and respawns the
group: a process-level restart, with a fresh `import torch`).

BENCH_KIND=barrier: a raw-socket client (stdlib only, no reader thread, so
the measure is the agent's, not a Python thread hand-off). BENCH_ITERS
times: note t_arrive, send at_rcb_barrier, block until job_start, note
t_release, send past_rcb_barrier, print
  bar it I rank R arrive A release B
then rank 0 sends job_fault and every rank waits for the agent's job_fault
(the local-mode in-process cycle) before the next iteration.
"""
import importlib
import json
import os
import select
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))


def out(text):
    os.write(1, (text + "\n").encode())


def fault_worker():
    mod = os.environ.get("BENCH_IMPORT", "torch")
    if mod:
        importlib.import_module(mod)
    from hyperpod_worker import AgentClient, restartable

    faults = int(os.environ.get("BENCH_FAULTS", "3"))
    plr = os.environ.get("BENCH_MODE", "ipr") == "plr"

    def train(client):
        t = time.monotonic()
        rank = int(client.env["RANK"])
        rc = int(client.env["JOB_RESTART_COUNT"])
        out("bench resume rank %d rc %d t %.6f pid %d" % (rank, rc, t, os.getpid()))
        if rc >= faults:
            return 0
        if rank == 0:
            out("bench fault rank 0 rc %d t %.6f" % (rc, time.monotonic()))
            if plr:
                os._exit(1)
            raise RuntimeError("bench fault")
        select.select([client.fileno()], [], [], 300)
        client.check()  # FaultInterrupt: back to the barrier
        out("bench rank %d: no fault heard" % rank)
        os._exit(4)

    client = AgentClient().connect()
    restartable(client=client)(train)()
    client.close()


class Raw:
    def __init__(self):
        self.lr = int(os.environ["LOCAL_RANK"])
        self.cid = "bench-%d" % os.getpid()
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(os.environ["HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH"])
        self.buf = b""

    def send(self, typ, **fields):
        fields.update(type=typ, local_rank=self.lr, client_id=self.cid)
        data = json.dumps(fields).encode()
        self.s.sendall(struct.pack("!I", len(data)) + data)

    def recv_type(self, want):
        while True:
            while len(self.buf) >= 4:
                (n,) = struct.unpack("!I", self.buf[:4])
                if len(self.buf) < 4 + n:
                    break
                msg = json.loads(self.buf[4:4 + n])
                self.buf = self.buf[4 + n:]
                if msg.get("type") == want:
                    return msg
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("agent closed the connection")
            self.buf += chunk


def barrier_worker():
    iters = int(os.environ.get("BENCH_ITERS", "20"))
    c = Raw()
    c.send("init")
    for it in range(iters):
        arrive = time.monotonic()
        c.send("at_rcb_barrier")
        start = c.recv_type("job_start")
        release = time.monotonic()
        c.send("past_rcb_barrier")
        rank = int(start["worker_envs"]["RANK"])
        out("bar it %d rank %d arrive %.6f release %.6f" % (it, rank, arrive, release))
        if it == iters - 1:
            break
        if rank == 0:
            c.send("job_fault", rank=0, reason="Bench", message="bench",
                   restart_mode="in_process_restart")
        c.recv_type("job_fault")


if __name__ == "__main__":
    if os.environ.get("BENCH_KIND", "fault") == "barrier":
        barrier_worker()
    else:
        fault_worker()
