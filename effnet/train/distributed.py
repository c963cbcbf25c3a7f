"""DistributedDataParallel plumbing for ``torchrun``: which process this is, and the epoch sampler."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(world: int) -> bool:
    """Join torchrun's process group; False for a single process.

    gloo even where CUDA is present: the loop trains on the CPU, and nccl only reduces CUDA tensors."""
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def sync_buffers_from_rank0(model: nn.Module) -> None:
    """DDP keeps parameters in sync; BatchNorm statistics from each rank's last forward differ: take rank 0's."""
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


class EpochSampler(torch.utils.data.Sampler):
    """DistributedSampler order for (epoch), minus the batches already done; yields ``epoch * n + i``."""

    def __init__(self, n: int, rank: int, world: int, seed: int) -> None:
        self.n = n
        self.inner = torch.utils.data.DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                                         seed=seed, drop_last=True)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        self.inner.set_epoch(epoch)

    def __iter__(self):
        for i in list(self.inner)[self.skip:]:
            yield self.epoch * self.n + i

    def __len__(self) -> int:
        return len(self.inner) - self.skip
