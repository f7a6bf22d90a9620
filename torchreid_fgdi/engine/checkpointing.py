"""The engine's checkpoint files: which to resume, how far a run got, and which are known good."""

from __future__ import annotations

import os.path as osp
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from ..errors import RunFolderError
from ..utils.checkpoint import CheckpointError, newest_intact, write_checkpoint
from .settings import FGDISettings
from .stages import DONE, FGDI_STAGES, Stage, epoch_key, with_epochs


@dataclass
class Progress:
    """Where a checkpoint stands: finished or not, and for each epoch key, whether its stage is
    over and how many of its epochs ran."""

    finished: bool
    epochs: dict[str, tuple[bool, int]] = field(default_factory=dict)


def check_data(recorded: str | None, current: str | None, checkpoint: str) -> None:
    """Refuses to resume on training data other than the checkpoint's (same settings, other files)."""
    if recorded and current and recorded != current:
        raise RunFolderError(
            f"the training images and labels under data.root differ from those {checkpoint} was trained on "
            "(its data fingerprint does not match): resume on the same data, or start a new run in another "
            "data.save_dir"
        )


class KnownGood:
    """Which checkpoint files are known to hold good weights, for the advice after a NaN loss.

    A file is confirmed once a complete epoch with finite losses has trained from it; a newer one
    may already hold weights on their way to a NaN.
    """

    def __init__(self) -> None:
        self.confirmed: list[str] = []  # oldest first
        self.unconfirmed: list[str] = []  # written since
        self.trained_from: list[str] = []  # the unconfirmed ones the current epoch started from

    def epoch_started(self) -> None:
        self.trained_from, self.unconfirmed = self.unconfirmed, []

    def epoch_finished(self) -> None:
        self.confirmed = [p for p in self.confirmed if p not in self.trained_from] + self.trained_from
        self.trained_from = []

    def written(self, paths: list[str]) -> None:
        self.confirmed = [p for p in self.confirmed if p not in paths]
        self.unconfirmed += paths

    def names(self, writing: Collection[str] = ()) -> list[str]:
        """The confirmed files (by name, in the checkpoint's folder) once `writing` is replaced."""
        return [osp.basename(p) for p in self.confirmed if p not in writing]

    def restore(self, path: str, names: list[str]) -> None:
        """After resuming `path`, whose state recorded `names` as confirmed."""
        folder = osp.dirname(path)
        self.confirmed = [osp.join(folder, n) for n in names if n != osp.basename(path)]
        self.unconfirmed, self.trained_from = [path], []

    def advice(self) -> str:
        doubtful = [p for p in dict.fromkeys(self.trained_from + self.unconfirmed) if osp.isfile(p)]
        doubt = (
            f" Not {', '.join(doubtful)}: no complete epoch has trained from it, so it may already hold the "
            "damage (resuming it with a lower rate may work, but it is not known to be good)."
            if doubtful
            else ""
        )
        good = [p for p in self.confirmed if osp.isfile(p)]
        if not good:
            return f"no checkpoint is known to be good: start afresh with a lower learning rate.{doubt}"
        return (
            f"the newest checkpoint known to be good is {good[-1]}: continue with model.resume {good[-1]} and, "
            f"e.g., a lower learning rate (the new rate applies to the rest of the run).{doubt}"
        )


def finished_run(path: str, done: str) -> str:
    """What resuming the checkpoint `path` ('' if unknown) of a finished run does, and how to evaluate
    it otherwise; `done`: what the run trained ('every stage trained, 45 epochs')."""
    what = f"{path} is the checkpoint of a finished run" if path else "The resumed run is finished"
    return (
        f"=> {what} ({done}): nothing left to train, so its final test is repeated (same weights and settings, "
        "so the same results unless the test images changed). To evaluate it with other test settings: "
        f"test.evaluate True model.load_weights {path or '<its checkpoint>'}"
    )


def continue_from(state: dict, path: str, save_dir: str) -> str:
    """Makes ``save_dir/checkpoints/latest.pth`` a copy of the checkpoint `state` read from `path`,
    stamped as written now, so that ``model.resume auto`` after a kill continues this run, not a
    checkpoint of the folder's earlier course (the diverging one a NaN recovery started over from,
    or stage files of a longer run)."""
    latest_path = osp.join(save_dir, "checkpoints", "latest.pth")
    if osp.abspath(path) != osp.abspath(latest_path):
        write_checkpoint({**state, "saved": time.time()}, latest_path)
    return latest_path


def checkpoint_progress(state: dict, settings: FGDISettings, table: tuple[Stage, ...] = FGDI_STAGES) -> Progress:
    """How far the run of an engine checkpoint got, for checking a resume's changed epochs;
    `settings`: the recorded config's."""
    stages = with_epochs(table, settings.epochs)
    names = [stage.name for stage in stages]
    if state["stage"] not in (*names, DONE):
        raise CheckpointError(
            f"the checkpoint stands at stage {state['stage']!r}, which these stages ({', '.join(names)}) do not include"
        )
    at = names.index(state["stage"]) if state["stage"] != DONE else len(names)
    epochs = {}
    for index, stage in enumerate(stages):
        if index < at:  # over: every epoch ran
            epochs[epoch_key(stage.name)] = (True, stage.epochs)
        else:  # under way (its epochs so far) or still to come
            epochs[epoch_key(stage.name)] = (False, state["stage_epoch"] if index == at else 0)
    return Progress(finished=state["stage"] == DONE, epochs=epochs)


def newest_checkpoint(folder: str, table: tuple[Stage, ...] = FGDI_STAGES) -> str:
    """The checkpoint in `folder` written last (``latest.pth``, or a stage file when a kill came
    between the two), skipping damaged files (each reported), or '' if there is none."""
    order = (*(stage.name for stage in table), DONE)
    names = ("latest.pth", *(f"{s}.pth" for s in order[:-1]))

    def written(path: str, state: dict) -> tuple:
        return state.get("saved", 0.0), order.index(state["stage"]), state["stage_epoch"]

    return newest_intact([osp.join(folder, name) for name in names], written)
