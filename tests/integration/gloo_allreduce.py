"""A 2+ worker gloo job: init_process_group from the torchrun environment,
all_reduce of (rank + 1), print the sum. Run by test_torch_gloo.py."""
import os

import torch
import torch.distributed as dist


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert rank == int(os.environ["RANK"]) and world == int(os.environ["WORLD_SIZE"])
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    # One write(2), so two workers sharing the agent's stdout never
    # interleave within a line (print may write text and newline apart).
    os.write(1, f"gloo rank {rank} world {world} sum {int(t.item())}\n".encode())
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
