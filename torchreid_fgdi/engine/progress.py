"""Where a run stands: tqdm bars with ETA that stay silent in logs and batch jobs, and the console
lines' one epoch numbering and whole-run ETA (`RunClock`).

A bar shows when stderr is a terminal, on the main process only; ``TORCHREID_FGDI_PROGRESS=1``
forces bars on (``0`` off), e.g. under a job scheduler that keeps a terminal-like log
(`utils.progress`, the rule every bar follows).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from tqdm import tqdm

from ..utils import progress as bars
from . import distributed
from .stages import IMAGE, PROMPT, Stage, run_epoch


def enabled() -> bool:
    return bars.shown(distributed.is_main())


def bar(desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    return bars.bar(desc, total, unit, distributed.is_main())


def track(iterable: Iterable, desc: str, unit: str = "batch") -> Iterator:
    """`iterable` with a bar of its own (its length as total)."""
    total = len(iterable) if hasattr(iterable, "__len__") else None
    with bar(desc, total, unit) as b:
        for item in iterable:
            yield item
            b.update()


def terms(values: Mapping[str, float]) -> str:
    """'loss 1.2345 id 0.6789 ... acc 12.50%': loss terms, and accuracies (a name ending in 'acc', in
    percent as torchreid's `metrics.accuracy` gives them in every engine), as the console lines show them."""
    return " ".join(
        f"{name} {value:.2f}%" if name.endswith("acc") else f"{name} {value:.4f}" for name, value in values.items()
    )


def epoch_line(epoch: str, seconds: float, means: Mapping[str, float], rates: str, eta: str = "") -> str:
    """The line that ends an epoch in every engine: '=> <epoch> in 12 s, epoch means: <terms> | <rates> | <eta>'."""
    return f"=> {epoch} in {seconds:.0f} s, epoch means: {terms(means)} | {rates}" + (f" | {eta}" if eta else "")


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class RunClock:
    """One epoch numbering over all the stages of a run, and the time left for all of them.

    Run epochs count every stage's epochs in table order, prompt stages included: with 15, 10, 5
    and 15 epochs, stage 3's first epoch is run epoch 31/45. The ETA covers the training steps left
    in every stage: image stages timed per batch, prompt stages per epoch, each from the steps this
    process has run (`start` / `step`). A kind of stage not run yet cannot be timed: the ETA names
    its epochs instead of guessing. Tests, checkpoints and feature extraction are not counted.
    """

    def __init__(self, stages: Sequence[Stage], batches: int):
        self.stages = tuple(stages)
        self.batches = batches  # per image epoch
        self.total = sum(stage.epochs for stage in self.stages)
        self.seconds = {IMAGE: 0.0, PROMPT: 0.0}
        self.steps = {IMAGE: 0, PROMPT: 0}
        self._mark = time.monotonic()

    def start(self) -> None:
        """The next step starts now (what ran since is not a step: a test, a checkpoint...)."""
        self._mark = time.monotonic()

    def step(self, kind: str) -> None:
        """One step of a `kind` stage (an image batch, a prompt epoch) ended now."""
        now = time.monotonic()
        self.seconds[kind] += now - self._mark
        self.steps[kind] += 1
        self._mark = now

    def seconds_per_step(self, kind: str) -> float:
        return self.seconds[kind] / max(self.steps[kind], 1)

    def _steps_per_epoch(self, stage: Stage) -> int:
        return self.batches if stage.kind == IMAGE else 1

    def epoch(self, name: str, epoch: int) -> str:
        """'stage3 epoch 1/15 (run epoch 31/45)' for epoch `epoch` (from 1) of stage `name`."""
        (stage,) = [stage for stage in self.stages if stage.name == name]
        return f"{name} epoch {epoch}/{stage.epochs} (run epoch {run_epoch(self.stages, name, epoch)}/{self.total})"

    def eta(self, name: str, epoch: int, done: int | None = None) -> str:
        """'eta 0:12:34' for the rest of the run after `done` steps (None: all) of epoch `epoch` of
        stage `name`, '+ 15 prompt epochs not timed yet' added for a kind without a timed step."""
        at = [stage.name for stage in self.stages].index(name)
        steps, epochs = {IMAGE: 0, PROMPT: 0}, {IMAGE: 0, PROMPT: 0}
        for stage in self.stages[at:]:
            per_epoch = self._steps_per_epoch(stage)
            if stage is self.stages[at]:
                done = per_epoch if done is None else done
                steps[stage.kind] += (stage.epochs - epoch + 1) * per_epoch - done
                epochs[stage.kind] += stage.epochs - epoch + (done < per_epoch)
            else:
                steps[stage.kind] += stage.epochs * per_epoch
                epochs[stage.kind] += stage.epochs
        seconds = sum(steps[kind] * self.seconds_per_step(kind) for kind in steps)
        untimed = [f"{epochs[kind]} {kind} epochs" for kind in steps if steps[kind] and not self.steps[kind]]
        return f"eta {duration(seconds)}" + "".join(f" + {n} not timed yet" for n in untimed)
