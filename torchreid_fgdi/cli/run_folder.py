"""A run owns its ``data.save_dir``: one writer at a time, one experiment per folder, and a resume
that may change only what can change mid-run.

Every number a run reports comes from the checkpoints and logs in its folder, so a second run
writing there (at the same time, or later with other settings) would make a table that mixes
two experiments. The folder's ``run.yaml`` records the config of the experiment that owns it;
checkpoints record theirs, and resuming one compares it with the current config key by key.
"""

from __future__ import annotations

import fcntl
import os
import os.path as osp
import socket
import sys
import time
from collections.abc import Sequence

from yacs.config import CfgNode as CN

from ..config import load_config_text
from ..config.checks import flat_items
from ..engine.checkpointing import Progress
from ..engine.stages import ALL_EPOCH_KEYS
from ..errors import ConfigError, RunFolderError
from ..utils import atomic, config_yaml
from ..utils.checkpoint import recorded_config_text

LOCK_FILE = ".run.lock"
RUN_SUBFOLDERS = ("checkpoints", "features", "model", "plots")  # a run's own; evaluation/ is another run's folder
OWNER_FILE = "run.yaml"

# Keys that never change what a run computes: where things are, how fast, how much is shown.
LOGISTICS = (
    *("data.root", "data.save_dir", "data.workers", "model.resume", "use_gpu", "train.print_freq"),
    *("fgdi.checkpoint_every", "fgdi.clip_cache_dir"),
    *(f"test.{k}" for k in ("batch_size", "evaluator", "eval_freq", "start_eval", "plots", "plot_queries")),
    *(f"test.{k}" for k in ("visrank", "visrank_topk", "evaluate", "allow_untrained", "allow_recipe_change")),
    "test.rerank_memory_gib",
)
# Keys a resumed run may change; they apply to the rest of the run (and the log lists them). torchreid's
# schedulers restore their own milestones from a checkpoint, so only a baseline's base rate may change.
EPOCHS = (*ALL_EPOCH_KEYS, "train.max_epoch")
LEARNING_RATES = (
    *(f"fgdi.image.{k}" for k in ("lr", "bias_lr_factor", "milestones", "gamma")),
    *(f"fgdi.prompt.{k}" for k in ("lr", "classifier_lr", "min_lr")),
    "train.lr",
)
TEST_SETTINGS = (
    *(f"test.{k}" for k in ("dist_metric", "normalize_feature", "ranks", "rerank")),
    *("cuhk03.use_metric_cuhk03", "fgdi.test_precision"),
)
RESUMABLE = (*EPOCHS, *LEARNING_RATES, *TEST_SETTINGS, "fgdi.precision")
RESUME_FIX = "resuming it cannot be checked against this config; start from its weights with model.load_weights instead"


def differences(old: CN, new: CN, ignore: Sequence[str] = LOGISTICS) -> dict[str, tuple]:
    """{key: (old value, new value)} for every key whose values differ, `ignore` aside."""
    before, after = flat_items(old), flat_items(new)
    return {k: (before.get(k), v) for k, v in after.items() if k not in ignore and before.get(k) != v}


def _listing(changes: dict[str, tuple]) -> str:
    return "\n".join(f"  {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume(recorded: CN, cfg: CN, progress: Progress, checkpoint: str) -> dict[str, tuple]:
    """The changes a resume of `checkpoint` applies (printed); raises `RunFolderError` naming every
    change that would make the checkpoint meaningless, and every change a finished run cannot take."""
    changes = differences(recorded, cfg)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE}
    if progress.finished:
        refused.update(changes)
    for key, (over, done) in progress.epochs.items():
        if key in changes and (over or changes[key][1] < done):
            refused[key] = changes[key]
    if refused:
        hint = (
            "the run has finished, so nothing of it can change; to evaluate it with other test settings, "
            f"use test.evaluate True model.load_weights {checkpoint}"
            if progress.finished
            else "these settings make the checkpoint mean something else (other data, model or sizes, or "
            "epochs of a stage already over)"
        )
        raise RunFolderError(
            f"cannot resume {checkpoint} with this config; {hint}. Differing from the checkpoint's config:\n"
            f"{_listing(refused)}\nUse another data.save_dir for a new experiment, or undo these changes."
        )
    if changes:
        print(f"=> Resuming {checkpoint} with changed settings, applied to the rest of the run:\n{_listing(changes)}")
    return changes


def recorded_config(state: dict, checkpoint: str) -> CN:
    """The config a checkpoint records; refused if it has none (nothing to check a resume against)."""
    text = recorded_config_text(state, checkpoint, fix=RESUME_FIX)
    return load_config_text(text, f"the config recorded in {checkpoint}")


class RunFolder:
    """``with RunFolder(save_dir) as folder: folder.claim(cfg, resuming)`` holds the folder for one run.

    A second process that tries to write the same folder is refused (an advisory lock the OS
    drops when the holder dies, even by SIGKILL), as is a fresh run in a folder that another
    experiment owns. Temporary files of killed writes are removed.
    """

    def __init__(self, save_dir: str):
        self.save_dir = save_dir
        self._lock = None

    def acquire(self) -> None:
        os.makedirs(self.save_dir, exist_ok=True)
        path = osp.join(self.save_dir, LOCK_FILE)
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"data.save_dir {self.save_dir} is in use by a running job ({holder}): two runs writing one "
                "folder would mix their checkpoints and logs; give this run another data.save_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: ")
        handle.write(" ".join(sys.argv) + "\n")
        handle.flush()
        self._lock = handle
        folders = [self.save_dir] + [osp.join(self.save_dir, sub) for sub in RUN_SUBFOLDERS]
        atomic.remove_temporaries(*folders)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def claim(self, cfg: CN, resuming: bool) -> None:
        """Refuses a run in a folder that another experiment owns (a resume may differ from the owner only
        where it may differ from its checkpoint); records this run as the owner."""
        path = osp.join(self.save_dir, OWNER_FILE)
        if osp.isfile(path):
            try:
                owner = load_config_text(config_yaml.read_text(path), path)
            except ConfigError as err:  # its advice is for a config the user wrote; the run wrote this one
                raise ConfigError(
                    f"{err}. {path} is this folder's record of the run that owns it, written by that run: "
                    "restore it, or use another data.save_dir"
                ) from err
            changes = differences(owner, cfg, LOGISTICS + RESUMABLE if resuming else LOGISTICS)
            if changes:
                raise RunFolderError(
                    f"data.save_dir {self.save_dir} holds another experiment ({path}); a new run there would "
                    f"overwrite its results. Its settings differ from this config in:\n{_listing(changes)}\n"
                    "Give this run another data.save_dir, continue that one with model.resume auto, or delete the "
                    "folder to start over."
                )
        atomic.write_text(path, cfg.dump())

    def __enter__(self) -> RunFolder:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
