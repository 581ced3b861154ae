#!/usr/bin/python3
"""train_gloo.py -- the smallest torch.distributed job: gloo
init_process_group from the torchrun environment (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), one all_reduce of (rank + 1), print the sum.
Meant for /usr/bin/python3 with Debian's python3-torch (1.13):

    hyperpodrun --nnodes=1 --nproc-per-node=4 examples/train_gloo.py

prints "rank R world_size W sum S" with S = W * (W + 1) / 2 on every rank.
"""
import os
import sys

import torch
import torch.distributed as dist


def main():
    dist.init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    total = int(t.item())
    print(f"rank {rank} world_size {world} sum {total}", flush=True)
    dist.destroy_process_group()
    return 0 if total == world * (world + 1) // 2 else 1


if __name__ == "__main__":
    sys.exit(main())
