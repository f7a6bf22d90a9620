"""Whether a tqdm bar shows, the one rule for every bar of the package: when stderr is a terminal
(so logs and batch jobs stay clean), on the main process; ``TORCHREID_FGDI_PROGRESS=1`` forces
bars on and ``0`` off, e.g. under a job scheduler that keeps a terminal-like log.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

VARIABLE = "TORCHREID_FGDI_PROGRESS"


def shown(main_process: bool = True) -> bool:
    forced = os.environ.get(VARIABLE, "")
    if forced in ("0", "1"):
        return forced == "1" and main_process
    return sys.stderr.isatty() and main_process


def bar(desc: str, total: float | None = None, unit: str = "it", main_process: bool = True, **options) -> tqdm:
    """A tqdm bar that stays after it ends; `options` are tqdm's (its file, bar_format, ...)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not shown(main_process), dynamic_ncols=True, **options)
