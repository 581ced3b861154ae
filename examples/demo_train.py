"""A stand-in training script for the local demo (stdlib only).

Each worker "trains" for a few steps. On the first attempt the rank named by
HP_DEMO_FAIL_RANK (default 1) raises at step 2 while the other ranks wait,
so hyperpodrun stops the group and restarts it (TORCHELASTIC_RESTART_COUNT
goes 0 -> 1); the second attempt finishes.
"""
import os
import signal

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
fail_rank = int(os.environ.get("HP_DEMO_FAIL_RANK", "1"))

for step in range(3):
    print(f"rank {rank}/{world} attempt {attempt} step {step}", flush=True)
if attempt == 0:
    if rank == fail_rank:
        raise RuntimeError(f"rank {rank}: injected failure")
    signal.pause()  # the agent stops us when the other rank fails
print(f"rank {rank}: done", flush=True)
