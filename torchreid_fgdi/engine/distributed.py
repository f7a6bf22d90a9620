"""torch.distributed for the engines: one process per device, started by ``torchrun``.

Nothing here runs unless ``WORLD_SIZE`` > 1, so single-process runs are unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int]:
    """(rank, world size), joining the process group torchrun describes: NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank(), world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_true(flag: bool, device: torch.device) -> bool:
    """True if `flag` holds on every rank (one tiny all-reduce; free with one process)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def broadcast_tensors(tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Rank 0's values everywhere (same shapes on every rank)."""
    if world_size() > 1:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
    return tensors


def gather_in_order(shard: dict[str, torch.Tensor], indices: list[int]) -> dict[str, torch.Tensor]:
    """Every rank's rows of a sharded extraction, put back in dataset order."""
    if world_size() == 1:
        return shard
    parts = [None] * world_size()
    dist.all_gather_object(parts, ({k: v.cpu() for k, v in shard.items()}, indices))
    order = torch.tensor([i for _, idx in parts for i in idx]).argsort()
    return {k: torch.cat([p[k] for p, _ in parts])[order] for k in shard}


def replicas_agree(model: torch.nn.Module) -> bool:
    """Whether every rank holds the same weights (a cheap checksum of every parameter)."""
    if world_size() == 1:
        return True
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).cpu()
    sums = [torch.zeros_like(checksum) for _ in range(world_size())]
    dist.all_gather(sums, checksum)
    return all(torch.equal(s, sums[0]) for s in sums)


def gather_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's share of the batch, concatenated, with gradients flowing back to each share.

    Each rank then computes the batch-wide losses (batch-hard triplet, SupCon) on the whole
    global batch; DDP's gradient averaging turns that into the single-process gradient.
    """
    if world_size() == 1:
        return tensors
    from torch.distributed.nn.functional import all_gather

    return tuple(torch.cat(all_gather(t.contiguous())) for t in tensors)
