"""A torch gloo worker of an elastic job, as AWS's elastic-training guide
writes it: train until
hyperpod_elastic_agent.elastic_event_handler.elastic_event_detected()
says a scale event came (SIGUSR1, all-reduced across ranks with
HYPERPOD_SIGNAL_COORDINATION=distributed), "save", and exit 0.
Prints "compat KIND {json}" lines (test_compat_agent.py)."""
import json
import os
import sys
import time

from hyperpod_elastic_agent.elastic_event_handler import elastic_event_detected

import torch
import torch.distributed as dist

RANK = int(os.environ["RANK"])


def say(kind, **kw):
    # one write per line: PYTHONUNBUFFERED print() writes the newline
    # apart, and the agent relays both ranks to one stdout
    kw.update(rank=RANK, pid=os.getpid())
    sys.stdout.write("compat %s %s\n" % (kind, json.dumps(kw, sort_keys=True)))
    sys.stdout.flush()


dist.init_process_group("gloo")
say("ready", world=dist.get_world_size())
step = 0
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    t = torch.ones(1)
    dist.all_reduce(t)  # one "training step"
    step += 1
    if elastic_event_detected():
        say("elastic", step=step)  # the checkpoint would be saved here
        dist.destroy_process_group()
        sys.exit(0)
say("no-event", step=step)
sys.exit(3)
