"""mh_gloo.py -- the training script of the multi-host tests: a real torch
gloo job, one process per host, under hyperpodrun --inprocess-restart.

Every run (between two barrier releases) builds a process group from the
rank env the agent sent over a TCPStore on MASTER_ADDR:MASTER_PORT (rank 0
hosts it; a PrefixStore per restart count keeps runs apart), all_reduces
(rank + 1) * (restart + 1) and prints

  mh run rank R world W restart C pid P sum S

What a run does next comes from the environment, by restart count C:
  MH_FAIL="C:R,..."      global rank R raises (a fault reported over IPC);
                         the others wait for the agent's fault notice
  MH_CRASH="C:R,..."     global rank R exits 3 (a dead worker)
  MH_HOLD="C,..."        every rank waits for a fault notice
  MH_LINKDOWN="C:R,..."  on the fault notice, rank R takes its host's eth0
                         down before it goes back to the barrier (the
                         fabric then sets up with the link down); with
                         MH_LINKDOWN_GO=FILE only once FILE exists
and a run named nowhere ends the job: a gloo barrier, exit 0.

With MH_NCCL=1 the process whose RANK is 0 (before the first /start, when
RANK is negative: every host's local rank 0) sends a fresh fake NCCL unique id as job_data before
it waits at the barrier, as examples/README.md's recipe does, and every run
prints the id it was handed:

  mh nccl rank R restart C id ID
"""
import datetime
import json
import os
import select
import subprocess
import sys
import time

import torch
import torch.distributed as dist

SRC = os.environ["HP_SOURCE_DIR"]
sys.path.insert(0, os.path.join(SRC, "client", "python"))
from hyperpod_worker import AgentClient, FaultInterrupt  # noqa: E402

TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("MH_TIMEOUT_S", "60")))


def plan(name):
    out = {}
    for item in filter(None, os.environ.get(name, "").split(",")):
        c, _, r = item.partition(":")
        out.setdefault(int(c), set()).add(int(r) if r else -1)
    return out


FAIL, CRASH, HOLD, LINKDOWN = (plan(n) for n in ("MH_FAIL", "MH_CRASH",
                                                 "MH_HOLD", "MH_LINKDOWN"))
_store = {}
NCCL = os.environ.get("MH_NCCL") == "1"


def say(text):
    os.write(1, (text + "\n").encode())


def store_for(addr, port, rank, world):
    key = (addr, port)
    if key not in _store:
        _store.clear()
        _store[key] = dist.TCPStore(addr, port, world, rank == 0, TIMEOUT)
    return _store[key]


def wait_fault(client, rank, restart):
    r, _, _ = select.select([client.fileno()], [], [], TIMEOUT.total_seconds())
    if not r:
        say("mh rank %d never heard of a fault" % rank)
        os._exit(4)
    if rank in LINKDOWN.get(restart, ()):
        # the fault notice comes with the operator's /stop: its reply must
        # leave over eth0 first, so wait until the test says it came back
        # (a file, MH_LINKDOWN_GO), with a deadline
        go = os.environ.get("MH_LINKDOWN_GO")
        if go:
            deadline = time.monotonic() + TIMEOUT.total_seconds()
            while not os.path.exists(go):
                if time.monotonic() > deadline:
                    say("mh rank %d never got the go for eth0" % rank)
                    os._exit(4)
                time.sleep(0.01)
        subprocess.run(["ip", "link", "set", "eth0", "down"], check=True)
        say("mh rank %d took eth0 down" % rank)
    client.check()  # raises FaultInterrupt


def run_once(client):
    env = client.env
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    restart = int(env["JOB_RESTART_COUNT"])
    if NCCL:
        say("mh nccl rank %d restart %d id %s"
            % (rank, restart, env.get("NCCL_UNIQUE_ID", "none")))
    store = store_for(env["MASTER_ADDR"], int(env["MASTER_PORT"]), rank, world)
    dist.init_process_group("gloo", store=dist.PrefixStore("r%d" % restart, store),
                            rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        t = torch.tensor([float((rank + 1) * (restart + 1))])
        dist.all_reduce(t)
        say("mh run rank %d world %d restart %d pid %d sum %d"
            % (rank, world, restart, os.getpid(), int(t.item())))
        if rank in CRASH.get(restart, ()):
            say("mh rank %d crashes" % rank)
            os._exit(3)
        if rank in FAIL.get(restart, ()):
            raise RuntimeError("injected fault in rank %d" % rank)
        if restart in FAIL or restart in CRASH or restart in HOLD:
            wait_fault(client, rank, restart)
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


def main():
    client = AgentClient().connect()
    while True:
        # RANK is negative before the operator's first /start (group rank
        # -1, as the reference's): then each host's local rank 0 sends one
        # and the agents keep the one of the host that becomes group rank 0
        rank = int(os.environ.get("RANK", "0"))
        if NCCL and (rank == 0 or (rank < 0 and os.environ.get("LOCAL_RANK") == "0")):
            uid = os.urandom(128).hex()
            client.send_data(json.dumps({"NCCL_UNIQUE_ID": uid}))
            say("mh nccl sent %s" % uid)
        client.wait_at_barrier(None)
        try:
            run_once(client)
            break
        except FaultInterrupt:
            continue
        except RuntimeError as e:
            client.report_fault(type(e).__name__, str(e))
    client.close()
    say("mh done pid %d" % os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
