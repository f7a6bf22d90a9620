"""The authors' learning-rate schedules as per-epoch factors (epoch 1 is the first epoch).

Both run as `torch.optim.lr_scheduler.LambdaLR` stepped once before the first epoch and at the end
of every epoch (torchreid's `Engine.update_lr`), which equals the authors' step at epoch start.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def warmup_multistep(
    epoch: int, milestones: Sequence[int], gamma: float, warmup_factor: float, warmup_epochs: int
) -> float:
    """WarmupMultiStepLR: linear warm-up from `warmup_factor`, then x`gamma` at each milestone."""
    warm = 1.0
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** sum(epoch >= m for m in milestones)


def warmup_cosine(epoch: int, base_lr: float, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float):
    """timm's CosineLRScheduler (one cycle, warm-up not a prefix) as a factor of `base_lr`."""
    if epoch < warmup_epochs:
        lr = warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    elif epoch >= epochs:
        lr = min_lr
    else:
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))
    return lr / base_lr


def stepped_once(scheduler: LambdaLR) -> LambdaLR:
    """Moves a fresh scheduler to epoch 1, the value the authors' first epoch uses."""
    with warnings.catch_warnings():  # "step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    return scheduler


def image_scheduler(
    optimizer: Optimizer, milestones: Sequence[int], gamma: float, warmup_factor: float, warmup_epochs: int
) -> LambdaLR:
    factor = functools.partial(
        warmup_multistep,
        milestones=tuple(milestones),
        gamma=gamma,
        warmup_factor=warmup_factor,
        warmup_epochs=warmup_epochs,
    )
    return stepped_once(LambdaLR(optimizer, factor))


def prompt_scheduler(optimizer: Optimizer, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float):
    factors = [
        functools.partial(
            warmup_cosine,
            base_lr=group["lr"],
            epochs=epochs,
            warmup_epochs=warmup_epochs,
            warmup_lr=warmup_lr,
            min_lr=min_lr,
        )
        for group in optimizer.param_groups
    ]
    return stepped_once(LambdaLR(optimizer, factors))


def load_keeping_base_lrs(scheduler: LambdaLR, state: dict) -> None:
    """Loads a scheduler's position (its epoch) but keeps the base learning rates and the schedule
    it was built with, so a resumed run trains the rest of the way at the configured rates.

    Call it after the optimizer's ``load_state_dict``, which brings back the old rates.
    """
    base = list(scheduler.base_lrs)
    scheduler.load_state_dict(state)
    scheduler.base_lrs = base
    for group, lr, factor in zip(scheduler.optimizer.param_groups, base, scheduler.lr_lambdas):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def scale_lrs(scheduler: LRScheduler, ratio: float) -> None:
    """Multiplies every rate of a chainable torch scheduler (torchreid's step, multi-step, cosine)
    and its optimizer by `ratio`: a new base learning rate for the rest of a resumed run."""
    scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = group.get("initial_lr", group["lr"]) * ratio
        group["lr"] *= ratio
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
