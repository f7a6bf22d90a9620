"""The cache folder: where the synthetic benchmark's CLIP, gallery indexes and the benchmark peers are kept."""

from __future__ import annotations

import os
import os.path as osp


def cache_root() -> str:
    """``$TORCHREID_FGDI_CACHE`` (the same cache as the project's environments), else ~/.cache/torchreid-fgdi."""
    default = osp.join(os.environ.get("XDG_CACHE_HOME", osp.expanduser("~/.cache")), "torchreid-fgdi")
    return os.environ.get("TORCHREID_FGDI_CACHE", default)
