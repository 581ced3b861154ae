#!/usr/bin/env python3
"""ipr_train.py -- a training loop that survives an in-process restart.

Run it under `hyperpodrun --inprocess-restart` (the agent sets
HYPERPOD_ELASTICAGENT_SOCKET_SERVER_PATH). Each run waits at the agent's
barrier, then does HP_STEPS steps of HP_STEP_MS "work", checking for an
agent fault notification after each. HP_FAIL_AT_STEP/HP_FAIL_RANK inject
one exception (once per process) at that step on that global rank: the
worker reports it, goes back to the barrier and resumes with the next
restart count -- in the same process. Prints "rank R restart_count C step S"
per step and "done" at the end.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "client", "python"))
from hyperpod_worker import AgentClient, restartable  # noqa: E402

STEPS = int(os.environ.get("HP_STEPS", "5"))
STEP_S = int(os.environ.get("HP_STEP_MS", "10")) / 1000.0
FAIL_AT = int(os.environ.get("HP_FAIL_AT_STEP", "-1"))
FAIL_RANK = int(os.environ.get("HP_FAIL_RANK", "0"))

injected = False


class InjectedFault(RuntimeError):
    pass


def train(client):
    global injected
    rank = int(os.environ["RANK"])
    restart_count = int(os.environ.get("JOB_RESTART_COUNT", "0"))
    for step in range(STEPS):
        print(f"rank {rank} restart_count {restart_count} step {step}",
              flush=True)
        if step == FAIL_AT and rank == FAIL_RANK and not injected:
            injected = True
            raise InjectedFault(f"injected at step {step}")
        time.sleep(STEP_S)  # stands in for a training step
        client.check()      # a fault elsewhere: back to the barrier
    return 0


def main():
    client = AgentClient().connect()
    client.on_fault(lambda rc: print(
        f"pid {os.getpid()} fault notification restart_count {rc}",
        flush=True))
    restartable(client=client)(train)()
    client.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
