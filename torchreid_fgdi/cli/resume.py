"""Which checkpoint a run continues (``model.resume``, ``auto`` included), checked against the
run's config and data before anything is written."""

from __future__ import annotations

import glob
import os.path as osp
import re

from yacs.config import CfgNode as CN

from ..engine import distributed
from ..engine.checkpointing import Progress, check_data, checkpoint_progress, newest_checkpoint
from ..engine.settings import FGDISettings
from ..engine.stages import ALL_STAGE_NAMES, model_table
from ..models import VARIANTS
from ..utils.checkpoint import newest_intact, read_checkpoint
from .run_folder import RunFolder, check_resume, recorded_config

TORCHREID_CHECKPOINT = re.compile(r"model\.pth\.tar-(\d+)$")  # not a temporary file a killed save left


def checked_resume(cfg: CN, fingerprint: str, folder: RunFolder, fgdi: bool) -> tuple[str, CN | None]:
    """The checkpoint to resume ('' for none) and its recorded config, checked against `cfg` and the
    training data's `fingerprint` before anything is written; then the folder is claimed for the run."""
    resume = "" if cfg.test.evaluate else resume_path(cfg, fgdi)
    recorded = None
    if resume:
        state = read_checkpoint(resume, mmap=True)
        recorded = recorded_config(state, resume)
        if fgdi:  # the stages of the recorded model: another one's is then refused as a change of model.name
            table = model_table(recorded.model.name if recorded.model.name in VARIANTS else None)
            progress = checkpoint_progress(state, FGDISettings.from_node(recorded.fgdi, ALL_STAGE_NAMES), table)
        else:
            progress = _torchreid_progress(state, recorded)
        check_resume(recorded, cfg, progress, resume)
        check_data(state.get("data"), fingerprint, resume)
    if not cfg.test.evaluate and distributed.is_main():
        folder.claim(cfg, resuming=bool(resume))
    return resume, recorded


def resume_path(cfg: CN, fgdi: bool) -> str:
    """``model.resume``; ``auto`` is the run's newest intact checkpoint in ``data.save_dir``, or
    nothing (start afresh) if it has none, so re-running one command continues a killed run."""
    if cfg.model.resume != "auto":
        return cfg.model.resume
    if fgdi:
        found = newest_checkpoint(osp.join(cfg.data.save_dir, "checkpoints"), model_table(cfg.model.name))
    else:
        found = _newest_torchreid_checkpoint(osp.join(cfg.data.save_dir, "model"))
    if not found:
        print(f"=> model.resume auto: no checkpoint in {cfg.data.save_dir}, starting afresh")
        return ""
    print(f"=> model.resume auto: {found}")
    return found


def _newest_torchreid_checkpoint(folder: str) -> str:
    """torchreid's ``model.pth.tar-<epoch>`` of the highest epoch that is intact."""
    paths = [p for p in glob.glob(osp.join(glob.escape(folder), "*")) if TORCHREID_CHECKPOINT.search(p)]
    return newest_intact(paths, lambda path, state: int(TORCHREID_CHECKPOINT.search(path).group(1)))


def _torchreid_progress(state: dict, recorded: CN) -> Progress:
    done = int(state["epoch"])
    return Progress(done >= recorded.train.max_epoch, {"train.max_epoch": (False, done)})
