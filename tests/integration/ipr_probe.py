"""ipr_probe.py -- a worker for the in-process restart tests (test_ipr_*.py).

Uses client/python/hyperpod_worker.py (AgentClient + restartable) as a training
script would, and reports everything it sees as one-line records written
with a single write(2) each (so workers sharing the agent's stdout never
interleave inside a line):

  ipr-worker ready pid P local L         at start (harness tracks the pid)
  ipr run {json}                         after each barrier release: pid,
                                         local_rank, the released rank env,
                                         aggregate_worker_data, run index
  ipr notified {json}                    every job_fault (reader thread)
  ipr fault {json}                       the main loop saw the fault
  ipr rank_info {json}                   a job_rank_info (/update)
  ipr hang {json}                        this rank will not come back
  ipr nccl_sent {json}                   (IPR_NCCL) the id rank 0 sent
  ipr done {json}                        the run completed; exit 0

Behaviour (environment, all optional):
  IPR_FAIL_RANK=R[,R] global rank(s) R raise InjectedFault right after
                      their first release while JOB_RESTART_COUNT is 0
  IPR_HANG_RANK=R     on a fault, global rank R never returns to the
                      barrier (first process generation only)
  IPR_FAIL_BARE=1     the injected fault is a bare job_fault (no reason, no
                      message) followed by a return to the barrier
  IPR_DIE_RANK=R      on a fault, global rank R exits 5 instead of coming
                      back (first process generation only)
  IPR_DROP_RANK=R     on a fault, global rank R closes its IPC connection
                      and waits for ever, alive (first generation only)
  IPR_FAULT_MODE=M    the SIGUSR1 fault is a job_fault with restart_mode M
                      (then back to the barrier)
  IPR_DONE_AT=N       a run with JOB_RESTART_COUNT >= N completes at once
                      (default 1; -1 never)
  IPR_GATE=PATH       a FIFO opened for reading after connecting and before
                      the first barrier (first generation only): the test
                      decides when the workers may reach the barrier;
                      "{local_rank}" in PATH is replaced by LOCAL_RANK
  IPR_DATA=1          send job_data and rank_labels after every release
  IPR_SAFETY_S=S      give up (exit 3) after S seconds in one run (120)
  IPR_NCCL=1          global rank 0 sends job_data {"NCCL_UNIQUE_ID": <256
                      fresh random hex digits>} before every barrier wait,
                      as examples/README.md's NCCL flow does, and prints
                      "ipr nccl_sent {json}"
SIGUSR1 makes the worker raise InjectedFault from its main loop: the test
injects a fault into a chosen rank whenever it wants.
"""
import json
import os
import select
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("HP_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "client", "python"))
from hyperpod_worker import (AgentClient, FaultInterrupt,  # noqa: E402
                             restartable)

PID = os.getpid()
LOCAL = int(os.environ.get("LOCAL_RANK", "0"))
FIRST_GEN = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
FAIL_RANKS = {int(x) for x in os.environ.get("IPR_FAIL_RANK", "-1").split(",")}
HANG_RANK = int(os.environ.get("IPR_HANG_RANK", "-1"))
DIE_RANK = int(os.environ.get("IPR_DIE_RANK", "-1"))
DROP_RANK = int(os.environ.get("IPR_DROP_RANK", "-1"))
FAIL_BARE = os.environ.get("IPR_FAIL_BARE") == "1"
FAULT_MODE = os.environ.get("IPR_FAULT_MODE")
DONE_AT = int(os.environ.get("IPR_DONE_AT", "1"))
GATE = os.environ.get("IPR_GATE", "").replace("{local_rank}", str(LOCAL))
DATA = os.environ.get("IPR_DATA") == "1"
SAFETY_S = float(os.environ.get("IPR_SAFETY_S", "120"))
NCCL = os.environ.get("IPR_NCCL") == "1"


def emit(kind, **rec):
    rec.setdefault("pid", PID)
    rec.setdefault("local_rank", LOCAL)
    rec["t"] = time.monotonic()
    os.write(1, ("ipr %s %s\n" % (kind, json.dumps(rec, sort_keys=True))).encode())


class InjectedFault(RuntimeError):
    pass


poke = [False]
wake_r, wake_w = os.pipe()  # signal.set_wakeup_fd: select() sees SIGUSR1
os.set_blocking(wake_r, False)
os.set_blocking(wake_w, False)


def on_usr1(signum, frame):
    poke[0] = True


runs = [0]
injected = [False]


def train(client):
    run = runs[0]
    runs[0] += 1
    env = dict(client.env)
    rank = int(env.get("RANK", "-1"))
    rc = int(env.get("JOB_RESTART_COUNT", "0"))
    emit("run", run=run, rank=rank, restart=rc, env=env,
         agg=client.aggregate_worker_data)
    if DATA:
        client.send_data("data-r%d-c%d" % (rank, rc))
        client.send_labels({"label_r%d" % rank: "c%d" % rc})
    if rank in FAIL_RANKS and rc == 0 and not injected[0]:
        injected[0] = True
        if FAIL_BARE:
            client.report_fault(None, None)
            raise FaultInterrupt(0)
        raise InjectedFault("injected into rank %d" % rank)
    if DONE_AT >= 0 and rc >= DONE_AT:
        emit("done", rank=rank, restart=rc)
        return 0
    deadline = time.monotonic() + SAFETY_S
    while True:
        if poke[0]:
            poke[0] = False
            if FAULT_MODE:
                client.report_fault("InjectedFault", "SIGUSR1 into rank %d" % rank,
                                    restart_mode=FAULT_MODE)
                raise FaultInterrupt(0)
            raise InjectedFault("SIGUSR1 into rank %d" % rank)
        left = deadline - time.monotonic()
        if left <= 0:
            emit("safety-timeout", rank=rank)
            os._exit(3)
        try:
            r, _, _ = select.select([client.fileno(), wake_r], [], [], left)
        except InterruptedError:
            continue
        if wake_r in r:
            try:
                os.read(wake_r, 64)
            except BlockingIOError:
                pass
            continue
        if not r:
            continue
        ev = client.poll_event()
        if ev is None:
            continue
        if ev.kind == "fault":
            emit("fault", rank=rank, restart_count=ev.restart_count)
            if rank == HANG_RANK and FIRST_GEN:
                emit("hang", rank=rank)
                while True:  # never back to the barrier; SIGKILL ends us
                    signal.pause()
            if rank == DIE_RANK and FIRST_GEN:
                emit("die", rank=rank)
                os._exit(5)
            if rank == DROP_RANK and FIRST_GEN:
                emit("drop", rank=rank)  # first: the agent kills us soon after
                client.close()
                while True:  # alive, but gone from the IPC
                    signal.pause()
            raise FaultInterrupt(ev.restart_count)
        if ev.kind == "rank_info":
            emit("rank_info", rank=rank, env=ev.env,
                 agg=ev.aggregate_worker_data)


def main():
    signal.signal(signal.SIGUSR1, on_usr1)
    signal.set_wakeup_fd(wake_w)
    os.write(1, ("ipr-worker ready pid %d local %d\n" % (PID, LOCAL)).encode())
    client = AgentClient().connect()
    client.on_fault(lambda rc: emit("notified", restart_count=rc))
    if NCCL:
        wait = client.wait_at_barrier

        def wait_with_id(timeout=None):
            # RANK as of the last release: an operator's /start may move
            # this process to another rank
            if os.environ.get("RANK") == "0":
                uid = os.urandom(128).hex()
                client.send_data(json.dumps({"NCCL_UNIQUE_ID": uid}))
                emit("nccl_sent", rank=0, id=uid)
            return wait(timeout)
        client.wait_at_barrier = wait_with_id
    if GATE and FIRST_GEN:
        emit("gate")
        fd = os.open(GATE, os.O_RDONLY)  # blocks until the test opens it
        os.close(fd)
    try:
        restartable(client=client)(train)()
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
