"""tqdm progress bars with ETA that stay silent in logs and batch jobs.

A bar shows when stderr is a terminal, on the main process only; ``TORCHREID_FGDI_PROGRESS=1``
forces bars on (``0`` off), e.g. under a job scheduler that keeps a terminal-like log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator

from tqdm import tqdm

from . import distributed


def enabled() -> bool:
    forced = os.environ.get("TORCHREID_FGDI_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1" and distributed.is_main()
    return sys.stderr.isatty() and distributed.is_main()


def bar(desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True, leave=True)


def track(iterable: Iterable, desc: str, unit: str = "batch") -> Iterator:
    """`iterable` with a bar of its own (its length as total)."""
    total = len(iterable) if hasattr(iterable, "__len__") else None
    with bar(desc, total, unit) as b:
        for item in iterable:
            yield item
            b.update()
