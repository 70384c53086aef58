"""torch.distributed plumbing for training under torchrun (or `--nproc N`, see `launch`).

The run is defined by its global batch: `--batch-size` is split evenly over the processes, the
epoch order is one seeded permutation shared by all ranks, and gradients are averaged, so N
processes take the same optimisation steps as one process with the whole batch (exactly so for
models without batch statistics; BatchNorm becomes SyncBatchNorm on GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgemlic.device import resolve_device
from edgemlic.errors import EdgemlicError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World()


def join(device: str) -> tuple[World, torch.device]:
    """Join the process group torchrun described in the environment; a single process joins nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), resolve_device(device)
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and torch.cuda.device_count() <= world.local_rank:
        raise EdgemlicError(
            f"rank {world.rank} needs GPU {world.local_rank} but {torch.cuda.device_count()} GPU(s) are "
            "visible; lower --nproc-per-node or use --device cpu"
        )
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
    target = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    timeout = timedelta(seconds=float(os.environ.get("EDGEMLIC_RENDEZVOUS_TIMEOUT", "300")))
    try:
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    except Exception as e:
        raise EdgemlicError(
            f"cannot join the process group at {target} ({type(e).__name__}); check MASTER_ADDR/MASTER_PORT "
            "and that every node can reach it"
        ) from None
    return world, torch.device(f"cuda:{world.local_rank}" if use_cuda else "cpu")


def leave(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, world: World) -> int:
    if batch_size % world.size:
        raise EdgemlicError(
            f"--batch-size {batch_size} is the global batch; it must split evenly over {world.size} processes"
        )
    return batch_size // world.size


def gather(array: np.ndarray, world: World) -> np.ndarray:
    """Concatenate every rank's rows (in rank order) on every rank."""
    if not world.distributed:
        return array
    parts: list[np.ndarray | None] = [None] * world.size
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def distribute(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """Wrap for DistributedDataParallel; BatchNorm statistics are synchronised where NCCL allows it."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
