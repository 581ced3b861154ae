#!/usr/bin/python3
"""ipr_gloo.py -- a torch.distributed (gloo) job that survives an in-process
restart: the same processes, a new process group per run.

    hyperpodrun --nnodes=1 --nproc-per-node=2 --inprocess-restart \
        --no-python /usr/bin/python3 examples/ipr_gloo.py

Each run waits at the agent's barrier, builds a gloo group from the rank
environment the agent hands out, and does HP_STEPS all_reduce steps.
HP_FAIL_AT_STEP/HP_FAIL_RANK inject one exception (once per process).
Recovery, step by step:
  * the failing rank's exception is reported (restartable), its finally
    destroys its process group, which closes its gloo connections;
  * a peer blocked in all_reduce then fails too; that failure is a
    consequence, not a new fault, so it waits for the agent's job_fault and
    goes back to the barrier without reporting;
  * every rank rebuilds the group under a fresh store prefix (run<restart
    count>), on one TCPStore that lives as long as the process -- rank 0's
    store server survives the restart, so MASTER_PORT never changes hands.
Prints "rank R pid P restart_count C step S sum X" per step and "done".
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "client", "python"))
from hyperpod_worker import AgentClient, FaultInterrupt, restartable  # noqa

STEPS = int(os.environ.get("HP_STEPS", "5"))
FAIL_AT = int(os.environ.get("HP_FAIL_AT_STEP", "-1"))
FAIL_RANK = int(os.environ.get("HP_FAIL_RANK", "0"))
TIMEOUT = datetime.timedelta(seconds=int(os.environ.get("HP_GLOO_TIMEOUT_S",
                                                        "60")))
injected = False
store = None


def train(client):
    global injected, store
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    restart_count = int(os.environ.get("JOB_RESTART_COUNT", "0"))
    if store is None:
        store = dist.TCPStore(os.environ["MASTER_ADDR"],
                              int(os.environ["MASTER_PORT"]), world,
                              rank == 0, TIMEOUT)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            store=dist.PrefixStore(f"run{restart_count}",
                                                   store),
                            timeout=TIMEOUT)
    try:
        for step in range(STEPS):
            client.check()
            if step == FAIL_AT and rank == FAIL_RANK and not injected:
                injected = True
                raise RuntimeError(f"injected at step {step}")
            t = torch.tensor([float(rank + 1)])
            try:
                dist.all_reduce(t)
            except RuntimeError:
                # A peer went away; the agent will say whether that was a
                # fault it is restarting from.
                if client.wait_fault(TIMEOUT.total_seconds()) is not None:
                    raise FaultInterrupt(client.restart_count)
                raise
            print(f"rank {rank} pid {os.getpid()} restart_count "
                  f"{restart_count} step {step} sum {int(t.item())}",
                  flush=True)
    finally:
        dist.destroy_process_group()
    return 0


def main():
    client = AgentClient().connect()
    restartable(client=client)(train)()
    client.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
