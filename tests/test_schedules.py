"""The learning rate of every epoch: the image stages' warm-up multi-step schedule (one schedule over
stage 1 then stage 3) and the prompt stages' warm-up cosine, each restarted per stage.

Expected values are worked out by hand from docs/method.md, or taken from timm's
`CosineLRScheduler` as the authors configure it, never from the code under test."""

import math
from pathlib import Path

import pytest
import torch

from torchreid_fgdi.cli.train import train
from torchreid_fgdi.engine import schedules
from torchreid_fgdi.engine.run_log import read_metrics

CONFIG = str(Path(__file__).parents[1] / "configs" / "synthetic" / "fgdi_tiny.yaml")
STAGES = ("stage1", "stage2a", "stage2b", "stage3")


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    """One parameter group per learning rate (as the engine has weights / biases, prompts / classifiers)."""
    return torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def _rates_per_epoch(scheduler, epochs: int) -> list[list[float]]:
    """Each group's rate during epochs 1..`epochs`, stepping once after each epoch as the engine does."""
    rates = []
    for _ in range(epochs):
        rates.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.step()
    return rates


def test_image_schedule_warms_up_linearly_from_its_factor_then_divides_at_each_milestone():
    scheduler = schedules.image_scheduler(
        _optimizer(0.01, 0.02), milestones=[4, 7], gamma=0.1, warmup_factor=0.1, warmup_epochs=3
    )
    # epoch e < 3: 0.1 + (1 - 0.1) * e / 3; x0.1 from epoch 4, x0.01 from epoch 7
    factors = [0.4, 0.7, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    for epoch, (got, factor) in enumerate(zip(_rates_per_epoch(scheduler, 9), factors), 1):
        assert got == pytest.approx([0.01 * factor, 0.02 * factor], rel=1e-9), epoch


def test_image_schedule_defaults_give_the_authors_rates_at_their_epochs():
    scheduler = schedules.image_scheduler(
        _optimizer(5e-6), milestones=[30, 50], gamma=0.1, warmup_factor=0.1, warmup_epochs=10
    )
    rates = [r[0] for r in _rates_per_epoch(scheduler, 60)]
    assert rates[0] == pytest.approx(5e-6 * 0.19)  # epoch 1: 0.1 * 0.9 + 0.1
    assert rates[9] == pytest.approx(5e-6)  # epoch 10: warm
    assert rates[29] == pytest.approx(5e-7) and rates[28] == pytest.approx(5e-6)  # epoch 30: first milestone
    assert rates[49] == pytest.approx(5e-8) and rates[59] == pytest.approx(5e-8)


def _timm_cosine(base_lrs, epochs, warmup_epochs, warmup_lr, min_lr) -> list[list[float]]:
    """The authors' scheduler: timm's CosineLRScheduler, stepped with the epoch number at each epoch's start."""
    scheduler_module = pytest.importorskip("timm.scheduler")
    optimizer = _optimizer(*base_lrs)
    scheduler = scheduler_module.CosineLRScheduler(
        optimizer,
        t_initial=epochs,
        lr_min=min_lr,
        cycle_mul=1.0,
        cycle_decay=0.1,
        warmup_lr_init=warmup_lr,
        warmup_t=warmup_epochs,
        cycle_limit=1,
        t_in_epochs=True,
    )
    rates = []
    for epoch in range(1, epochs + 1):
        scheduler.step(epoch)
        rates.append([group["lr"] for group in optimizer.param_groups])
    return rates


@pytest.mark.parametrize("epochs,warmup_epochs", [(120, 5), (30, 5), (7, 2)])
def test_prompt_schedule_is_timms_warm_up_cosine_per_parameter_group(epochs, warmup_epochs):
    base_lrs, warmup_lr, min_lr = (3.5e-4, 0.01), 1e-5, 1e-6
    scheduler = schedules.prompt_scheduler(_optimizer(*base_lrs), epochs, warmup_epochs, warmup_lr, min_lr)
    got = _rates_per_epoch(scheduler, epochs)
    want = _timm_cosine(base_lrs, epochs, warmup_epochs, warmup_lr, min_lr)
    for epoch, (g, w) in enumerate(zip(got, want), 1):
        assert g == pytest.approx(w, rel=1e-9), epoch


def test_prompt_schedule_by_hand():
    scheduler = schedules.prompt_scheduler(_optimizer(0.01), epochs=4, warmup_epochs=2, warmup_lr=1e-5, min_lr=1e-6)
    rates = [r[0] for r in _rates_per_epoch(scheduler, 4)]
    half_way = 1e-6 + 0.5 * (0.01 - 1e-6) * (1 + math.cos(math.pi * 2 / 4))  # epoch 2 of 4: cos(pi / 2) = 0
    three_quarters = 1e-6 + 0.5 * (0.01 - 1e-6) * (1 + math.cos(math.pi * 3 / 4))
    assert rates == pytest.approx([1e-5 + (0.01 - 1e-5) / 2, half_way, three_quarters, 1e-6], rel=1e-9)


def test_a_run_trains_each_epoch_at_its_scheduled_rate(tiny_root, tmp_path):
    """Stage 3 continues stage 1's schedule (its milestone falls in stage 3); each prompt stage
    restarts its own cosine over its own epochs. Rates are read from the run's metrics file
    (the cosine's values in between are compared with timm's above)."""
    opts = ["fgdi.stage1_epochs", "1", "fgdi.stage2a_epochs", "2", "fgdi.stage2b_epochs", "1"]
    opts += ["fgdi.stage3_epochs", "2", "fgdi.image.lr", "0.001", "fgdi.image.milestones", "[3]"]
    opts += ["fgdi.image.warmup_epochs", "2", "fgdi.image.warmup_factor", "0.5", "fgdi.image.gamma", "0.1"]
    opts += ["fgdi.prompt.lr", "0.003", "fgdi.prompt.warmup_epochs", "2", "fgdi.prompt.warmup_lr", "1e-4"]
    opts += ["fgdi.prompt.min_lr", "1e-6", "fgdi.prompt.batch_size", "32", "data.targets", "['synth_d']"]
    opts += ["test.plots", "False", "train.batch_size", "24", "fgdi.checkpoint_every", "100"]
    train(["--config-file", CONFIG, "--root", tiny_root, "data.save_dir", str(tmp_path), *opts])
    rows = read_metrics(str(tmp_path))
    logged = {stage: [r["lr"] for r in rows if r["group"] == stage] for stage in STAGES}
    warm = 1e-4 + (0.003 - 1e-4) / 2  # epoch 1 of a 2-epoch warm-up from 1e-4
    assert logged["stage1"] == pytest.approx([0.001 * 0.75])  # image epoch 1 of a warm-up from 0.5
    assert logged["stage3"] == pytest.approx([0.001, 0.0001])  # image epochs 2, 3: warm, then the milestone
    assert logged["stage2a"] == pytest.approx([warm, 1e-6])  # its last epoch at the floor
    assert logged["stage2b"] == pytest.approx([warm])  # warming up again: its own schedule
