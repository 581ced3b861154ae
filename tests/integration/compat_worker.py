"""A worker written the way the checkpointless library and AWS's guides
use the reference's Python API (hyperpod_elastic_agent), for
test_compat_agent.py and test_wheel*.py against the real agent:

  * InProcessRestartSocketClient() at import time;
  * COMPAT_WAIT_RANK=1: hyperpod_wait_rank_info() before anything else
    (checkpointless' wait_rank()), its worker_envs copied to os.environ;
  * a monitor thread looping on hyperpod_wait_fault(timeout=1), treating
    HyperPodIPCException as "no fault yet";
  * hyperpod_barrier() -> ("job_start", body) -> env from
    body["worker_envs"] -> hyperpod_past_rcb_barrier();
  * hyperpod_notify_labels() and hyperpod_send_data() every run;
  * COMPAT_FAULT="MODE:LOCAL_RANK:SEQ": in the run whose JOB_RESTART_COUNT
    is SEQ, that local rank sends hyperpod_send_fault(rank,
    RestartMode[MODE]); every rank then waits for the agent's job_fault
    and goes back to the barrier; every other run ends at once (exit 0);
  * COMPAT_CKPT=1: checkpoint discovery in every run (checkpoints()).

Prints "compat KIND {json}" lines on stdout (test_compat_agent.records)."""
import json
import os
import sys
import threading

import hyperpod_elastic_agent
from hyperpod_elastic_agent import TrainingManager
from hyperpod_elastic_agent.checkpoint_discovery import CheckpointType
from hyperpod_elastic_agent.ipc import (HyperPodIPCException,
                                        InProcessRestartSocketClient,
                                        RestartMode)

LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))
T = 120.0


_out = threading.Lock()


def say(kind, **kw):
    # one write per line under a lock: the monitor thread prints too
    kw.update(local_rank=LOCAL_RANK, pid=os.getpid())
    line = "compat %s %s\n" % (kind, json.dumps(kw, sort_keys=True))
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


client = InProcessRestartSocketClient()
say("connected", module=os.path.dirname(hyperpod_elastic_agent.__file__),
    version=hyperpod_elastic_agent.__version__)


def checkpoint_probe():
    """A checkpoint discovery client and its first answer (None: nothing
    complete yet), asked before the first barrier: the agent forgets
    pending steps at every query with none complete, so no rank may ask
    while another reports. False when the agent does not answer."""
    ck = TrainingManager.get_checkpoint_discovery_client(
        "compat-job",
        num_model_checkpoints=int(os.environ["LOCAL_WORLD_SIZE"]))
    got = []
    t = threading.Thread(target=lambda: got.append(
        ck.get_latest_checkpoint_path()), daemon=True)
    t.start()
    t.join(float(os.environ.get("COMPAT_CKPT_PROBE", "5")))
    if t.is_alive():
        say("ckpt-unanswered")
        return False
    say("ckpt", seq=-1, path=got[0])
    return ck


def checkpoints(ck, seq):
    """Across an in-process restart (COMPAT_FAULT=...:0): in run 0 both
    ranks report step 10 and only rank 0 step 20, so 20 never completes;
    in run 1 (every report reached the agent before the barrier released
    it) the agent must answer /ck/10."""
    if seq == 0:
        ck.update(10, "/ck/10", CheckpointType.MODEL_CHECKPOINT)
        if LOCAL_RANK == 0:
            ck.update(20, "/ck/20", CheckpointType.MODEL_CHECKPOINT)
    else:
        say("ckpt", seq=seq, path=ck.get_latest_checkpoint_path())


ck = None
if os.environ.get("COMPAT_CKPT") == "1":
    ck = checkpoint_probe()
    if not ck:
        sys.exit(0)

if os.environ.get("COMPAT_WAIT_RANK") == "1":
    typ, body = client.hyperpod_wait_rank_info()
    assert typ == "job_rank_info", typ
    os.environ.update(body["worker_envs"])
    say("rank_info", env=body["worker_envs"])

fault = threading.Event()


def monitor():
    while True:
        try:
            typ, body = client.hyperpod_wait_fault(timeout=1)
        except HyperPodIPCException:
            continue  # no fault yet
        say("fault", type=typ, restart_count=body.get("restart_count"))
        fault.set()


threading.Thread(target=monitor, daemon=True).start()

mode, fault_lr, fault_seq = (os.environ.get("COMPAT_FAULT", "") + "::").split(":")[:3]
runs = 0
while True:
    action, body = client.hyperpod_barrier()
    assert action == "job_start", action
    env = body["worker_envs"]
    os.environ.update(env)
    seq = int(env["JOB_RESTART_COUNT"])
    client.hyperpod_past_rcb_barrier()
    rank = int(env["RANK"])
    client.hyperpod_notify_labels({"PPRank": str(LOCAL_RANK)})
    client.hyperpod_send_data(rank, json.dumps({"run": runs}))
    say("run", run=runs, seq=seq, rank=rank, env=env,
        aggregate=body.get("aggregate_worker_data"))
    runs += 1
    if ck:
        checkpoints(ck, seq)
    if mode and seq == int(fault_seq):
        if LOCAL_RANK == int(fault_lr):
            client.hyperpod_send_fault(rank, RestartMode[mode],
                                       "InjectedFault", "compat worker")
            say("sent-fault", mode=mode)
        # every rank, the failed one too, returns to the barrier once the
        # agent's job_fault says the restart began (a barrier sent before
        # it would belong to the run being torn down)
        if not fault.wait(T):
            say("no-fault")
            sys.exit(3)
        # cleared here, not on release: the job_fault may come before
        # this rank even read its job_start
        fault.clear()
        continue
    break
say("done", runs=runs)
