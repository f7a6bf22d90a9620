"""torch.distributed for the engines: one process per device, started by ``torchrun``.

Nothing here runs unless ``WORLD_SIZE`` > 1, so single-process runs are unchanged. It also owns
who speaks: rank 0 prints the run's lines (`one_voice`), with the numbers of every rank's share of
the batch (`mean_over_ranks`); the other ranks print only their own errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

import torch
import torch.distributed as dist

# How gloo reports a collective whose peer process is gone (NCCL waits instead, until torchrun stops it).
PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


def init_from_env() -> tuple[int, int]:
    """(rank, world size), joining the process group torchrun describes: NCCL on GPUs, gloo on CPUs."""
    if _launched_world() > 1 and not dist.is_initialized():
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


def _launched_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun numbers it, known before the process group forms (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0")) if _launched_world() > 1 else 0


def speaks() -> bool:
    """Whether this process prints the run's lines: rank 0 (and any single process); see `one_voice`."""
    return launched_rank() == 0


class _Prefixed:
    """A text stream whose every line starts with `prefix` ('[rank1]: ')."""

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        for line in text.splitlines(keepends=True):
            self.stream.write((self.prefix if self.at_line_start else "") + line)
            self.at_line_start = line.endswith("\n")
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextlib.contextmanager
def one_voice() -> Iterator[None]:
    """Under torchrun, only rank 0 speaks while the block runs, one whole line at a time.

    Rank 0's stdout is line-buffered, so a line reaches the console (shared by every rank) whole.
    The other ranks' stdout, warnings and log records below ERROR go nowhere; what they write to
    stderr, their own errors, has every line prefixed with '[rankN]: ' (torch's own prefix of a
    rank's traceback). Single processes are unchanged.
    """
    if speaks():
        relined = _launched_world() > 1 and not getattr(sys.stdout, "line_buffering", True)
        if relined:
            sys.stdout.reconfigure(line_buffering=True)
        try:
            yield
        finally:
            if relined:
                sys.stdout.reconfigure(line_buffering=False)
        return
    silenced = logging.root.manager.disable
    with (
        open(os.devnull, "w") as nowhere,
        contextlib.redirect_stdout(nowhere),
        contextlib.redirect_stderr(_Prefixed(sys.stderr, f"[rank{launched_rank()}]: ")),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(silenced)


def lost_peer(err: BaseException) -> bool:
    """Whether `err` is a collective's failure because another rank's process ended first: not this
    rank's own error (that one is printed by the rank it happened on)."""
    return isinstance(err, RuntimeError) and any(words in str(err) for words in PEER_GONE)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the other ranks do: what it makes once and caches (the tiny
    CLIP's pretraining, a download) the others find made, and its lines are the ones shown."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


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


def mean_over_ranks(values: dict[str, float], weight: float) -> dict[str, float]:
    """`values` (a step's loss terms and accuracies) averaged over the ranks, each rank's weighted by
    `weight`, its share of the batch: the values of the whole batch, the same on every rank, as one
    process would have them. One small all-reduce per call, which every rank must make; free with one process."""
    if world_size() == 1:
        return values
    names = list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    sums = torch.tensor([*(float(values[n]) * weight for n in names), weight], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    *totals, weights = sums.tolist()
    return {name: total / weights for name, total in zip(names, totals)}


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
    return tuple(_GatherWithGrad.apply(t.contiguous()) for t in tensors)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather with a backward: each rank's share gets the sum of the gradients every rank's loss
    gave it. (torch's own, ``torch.distributed.nn.functional.all_gather``, is deprecated.)"""

    @staticmethod
    def forward(ctx, share: torch.Tensor) -> torch.Tensor:
        shares = [torch.empty_like(share) for _ in range(world_size())]
        dist.all_gather(shares, share)
        return torch.cat(shares)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad.chunk(world_size())[rank()]
