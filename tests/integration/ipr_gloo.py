"""ipr_gloo.py -- a gloo job that survives an in-process restart (run by
test_ipr_torch.py under hyperpodrun --inprocess-restart).

Every run (between two barrier releases) builds a fresh process group from
the rank env the agent sent (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
JOB_RESTART_COUNT): one TCPStore per process (rank 0 hosts it; re-created
only if MASTER_ADDR/PORT change) and a PrefixStore per restart count, so
no key of a dead run can be read by the next one. It all_reduces
(rank + 1) * (restart + 1) and prints one line per run:

  gloo run rank R world W restart C pid P sum S

In run 0, rank IPR_GLOO_FAIL_RANK (default 1) raises after the all_reduce:
the worker reports the fault, the others hear it from the agent, every
rank destroys its process group and goes back to the barrier; run 1 makes
a new group in the same processes and finishes.
"""
import datetime
import os
import select
import sys

import torch
import torch.distributed as dist

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("HP_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "client", "python"))
from hyperpod_worker import AgentClient, restartable  # noqa: E402

FAIL_RANK = int(os.environ.get("IPR_GLOO_FAIL_RANK", "1"))
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("IPR_GLOO_TIMEOUT_S", "120")))
_store = {}


def say(text):
    os.write(1, (text + "\n").encode())


def store_for(addr, port, rank, world):
    key = (addr, port)
    if key not in _store:
        _store.clear()  # the old one (if any) is dropped with its socket
        _store[key] = dist.TCPStore(addr, port, world, rank == 0, TIMEOUT)
    return _store[key]


def train(client):
    env = client.env
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    restart = int(env["JOB_RESTART_COUNT"])
    store = store_for(env["MASTER_ADDR"], int(env["MASTER_PORT"]), rank, world)
    dist.init_process_group("gloo", store=dist.PrefixStore("r%d" % restart, store),
                            rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        t = torch.tensor([float((rank + 1) * (restart + 1))])
        dist.all_reduce(t)
        say("gloo run rank %d world %d restart %d pid %d sum %d"
            % (rank, world, restart, os.getpid(), int(t.item())))
        if restart == 0:
            if rank == FAIL_RANK:
                raise RuntimeError("injected gloo fault in rank %d" % rank)
            # a healthy rank: no collective its failed peer would miss;
            # it waits for the agent's fault notification
            r, _, _ = select.select([client.fileno()], [], [], TIMEOUT.total_seconds())
            if r:
                client.check()  # raises FaultInterrupt: back to the barrier
            say("gloo rank %d never heard of the fault" % rank)
            os._exit(4)
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


def main():
    client = AgentClient().connect()
    client.on_fault(lambda rc: say("gloo notified pid %d restart_count %d"
                                   % (os.getpid(), rc)))
    restartable(client=client)(train)()
    client.close()
    say("gloo done pid %d" % os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
