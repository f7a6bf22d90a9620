"""What happens around the engine's steps, one job per hook: the console and logs, tests every N
epochs, checkpoints every N epochs, the domain features and the end-of-run plots.

The shape is fast-reid's (`fastreid/engine/hooks.py`): the engine's loop only steps (`forward_backward`
per image batch, `train_prompts` per prompt epoch) and calls every hook, in order, at each point of
the run::

    for each stage:   before_stage
      for each epoch: before_epoch
        for each step: before_step, (the step), after_step(summary)
        (update_lr: the stage's schedule)           after_epoch
      (the next stage)                              after_stage
    (trained)                                       after_run

At each point the engine already stands where the point says: in `after_epoch` its ``stage_epoch``
counts the epoch just trained, in `after_stage` it stands at the next stage.
"""

from __future__ import annotations

import time

import torchreid

from ..utils.rng import rng_preserved
from . import artifacts, distributed, progress
from .stages import IMAGE, Stage

# The stage-table engine (`fgdi.ImageFGDIEngine`, which imports this module): a torchreid Engine.
Engine = torchreid.engine.Engine


class Hook:
    """Does nothing at every point; a hook overrides the points it acts at."""

    def before_stage(self, engine: Engine, stage: Stage) -> None:
        pass

    def before_epoch(self, engine: Engine, stage: Stage) -> None:
        pass

    def before_step(self, engine: Engine, stage: Stage) -> None:
        pass

    def after_step(self, engine: Engine, stage: Stage, summary: dict) -> None:
        pass

    def after_epoch(self, engine: Engine, stage: Stage) -> None:
        pass

    def after_stage(self, engine: Engine, stage: Stage) -> None:
        pass

    def after_run(self, engine: Engine) -> None:
        pass


class StepLog(Hook):
    """The console lines, the run log and torchreid's TensorBoard batch curves.

    Every `print_freq` image batches a line with the epoch's means so far, the rates, the time per
    batch and the whole run's ETA (one epoch numbering over every stage, `progress.RunClock`); after
    every epoch a line with the epoch's means, which also go to ``metrics.jsonl`` with the rate the
    epoch trained at. torchreid's ``Train/*`` curves (time, data, each term, lr) per image batch.
    """

    def __init__(self, engine: Engine, print_freq: int):
        self.print_freq = print_freq
        self.clock = progress.RunClock(engine.stages, len(engine.train_loader))
        self.means = torchreid.utils.MetricMeter()
        self.batch_time, self.data_time = torchreid.utils.AverageMeter(), torchreid.utils.AverageMeter()
        self.lr, self.rates, self.started, self.end = 0.0, "", 0.0, 0.0

    def before_epoch(self, engine, stage):
        self.lr, self.rates = engine.get_current_lr(), engine.rates(stage)  # the epoch's: the schedule steps at its end
        self.started = self.end = time.time()
        self.clock.start()
        self.means = torchreid.utils.MetricMeter()
        self.batch_time, self.data_time = torchreid.utils.AverageMeter(), torchreid.utils.AverageMeter()

    def before_step(self, engine, stage):
        self.data_time.update(time.time() - self.end)

    def after_step(self, engine, stage, summary):
        self.batch_time.update(time.time() - self.end)
        self.means.update(summary)
        self.clock.step(stage.kind)
        if engine.bar is not None:
            engine.bar.update()
        if stage.kind != IMAGE:
            return
        if self.print_freq and (engine.batch_idx + 1) % self.print_freq == 0:
            epoch, batch = engine.stage_epoch + 1, engine.batch_idx + 1
            print(
                f"{self.clock.epoch(stage.name, epoch)} batch {batch}/{engine.num_batches}, means so far: "
                f"{progress.terms(self.epoch_means())} | {engine.rates(stage)} | "
                f"{self.clock.seconds_per_step(IMAGE):.2f} s/batch | {self.clock.eta(stage.name, epoch, batch)}"
            )
        self._batch_curves(engine)
        self.end = time.time()

    def _batch_curves(self, engine: Engine) -> None:
        """torchreid's per-batch TensorBoard curves, as its `Engine.train` writes them."""
        if engine.writer is None:
            return
        n_iter = engine.epoch * engine.num_batches + engine.batch_idx
        engine.writer.add_scalar("Train/time", self.batch_time.avg, n_iter)
        engine.writer.add_scalar("Train/data", self.data_time.avg, n_iter)
        for name, value in self.epoch_means().items():
            engine.writer.add_scalar("Train/" + name, value, n_iter)
        engine.writer.add_scalar("Train/lr", engine.get_current_lr(), n_iter)

    def epoch_means(self) -> dict[str, float]:
        return {name: meter.avg for name, meter in self.means.meters.items()}

    def after_epoch(self, engine, stage):
        done, means = engine.stage_epoch, self.epoch_means()
        seconds, eta = time.time() - self.started, self.clock.eta(stage.name, done)
        print(progress.epoch_line(self.clock.epoch(stage.name, done), seconds, means, self.rates, eta))
        engine.run_log.log(stage.name, {**means, "lr": self.lr}, done)


class PeriodicTest(Hook):
    """Tests every `eval_freq` epochs of the last stage from epoch `start_eval` (torchreid's
    ``test.eval_freq`` / ``test.start_eval``; not after its last epoch), and once after the run."""

    def __init__(self, test_kwargs: dict, eval_freq: int = -1, start_eval: int = 0):
        self.test_kwargs, self.eval_freq, self.start_eval = test_kwargs, eval_freq, start_eval

    def after_epoch(self, engine, stage):
        done = engine.stage_epoch
        if stage.name != engine.stages[-1].name or self.eval_freq <= 0 or done < self.start_eval:
            return
        if done % self.eval_freq == 0 and done != stage.epochs:
            engine.run_test(self.test_kwargs)

    def after_run(self, engine):
        engine.run_test(self.test_kwargs)


class PeriodicCheckpoint(Hook):
    """``save_dir/checkpoints``: ``latest.pth`` every `every` epochs within a stage (``fgdi.checkpoint_every``),
    ``<stage>.pth`` (and ``latest.pth``) after each stage, the last stage's again after the final test
    (with its Rank-1); and which of them are known to hold good weights (`checkpointing.KnownGood`)."""

    def __init__(self, save_dir: str, every: int):
        self.save_dir, self.every = save_dir, max(every, 1)

    def before_epoch(self, engine, stage):
        engine.known_good.epoch_started()

    def after_epoch(self, engine, stage):
        engine.known_good.epoch_finished()
        if engine.stage_epoch % self.every == 0 and engine.stage_epoch != stage.epochs:
            engine.save_checkpoint(self.save_dir)

    def after_stage(self, engine, stage):
        engine.save_checkpoint(self.save_dir, stage.name)

    def after_run(self, engine):
        engine.save_checkpoint(self.save_dir, engine.stages[-1].name)


class DomainFeatures(Hook):
    """``save_dir/features``: the test images' features per domain before the text-guided stage and
    after the run, for the domains plot (``test.plots``) and the diagnostics (`diagnostics.py`,
    whenever a text-guided stage trains); main process only."""

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    def before_stage(self, engine, stage):
        if stage.text_guided and engine.stage_epoch == 0:
            self.save(engine, f"before {stage.name}")

    def after_run(self, engine):
        self.save(engine, f"after {guided_stage(engine)}")

    def save(self, engine: Engine, title: str) -> None:
        guided = any(stage.text_guided and stage.epochs for stage in engine.stages)
        if not ((engine.test_settings.plots or guided) and distributed.is_main()):
            return
        engine.model.eval()
        with rng_preserved():
            saved = artifacts.domain_features(engine.datamanager, engine.extract_features, engine.device)
        artifacts.save_domain_features(saved, self.save_dir, title)


class Plots(Hook):
    """``save_dir/plots``: the loss curves per stage and the domains before and after the text-guided stage."""

    def __init__(self, save_dir: str):
        self.save_dir = save_dir

    def after_run(self, engine):
        if engine.test_settings.plots and distributed.is_main():
            guided = guided_stage(engine)
            titles = (f"before {guided}", f"after {guided}")
            artifacts.write_plots(self.save_dir, [stage.name for stage in engine.stages], titles)


def guided_stage(engine: Engine) -> str:
    """The text-guided stage's name ('training' in a table without one), as the domain features' titles say."""
    return next((stage.name for stage in engine.stages if stage.text_guided), "training")
