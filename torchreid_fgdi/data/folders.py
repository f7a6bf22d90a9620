"""A dataset folder's images: listed with the folder path taken literally, labelled from Market-1501 names."""

from __future__ import annotations

import glob
import os
import os.path as osp
import re

_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+\.jpg$")


def glob_with_literal_folders(pattern: str) -> list[str]:
    """`glob.glob` for torchreid's ``osp.join(folder, '*.jpg')`` patterns, the folder taken literally.

    torchreid globs a dataset's folder path as a pattern, so a data root such as ``run[1]`` matches
    nothing ("no images") or, worse, a sibling ``run1/`` whose images are then read silently. The
    trailing components that start with ``*`` are the pattern; everything before is a path.
    `integration.compat` makes torchreid's image datasets glob with it.
    """
    parts = pattern.split(os.sep)
    start = len(parts)
    while start > 0 and parts[start - 1].startswith("*"):
        start -= 1
    return glob.glob(os.path.join(glob.escape(os.sep.join(parts[:start])), *parts[start:]))


def parse_market_name(path: str) -> tuple[int, int]:
    """(pid, 0-based camid) from a Market-1501 file name such as `0001_c1s1_000151_01.jpg`."""
    match = _MARKET_NAME.match(osp.basename(path))
    if match is None:
        raise ValueError(
            f'cannot parse "{path}": expected a Market-1501 name like 0001_c1s1_000151_01.jpg '
            "(pid, camera, sequence, frame, box)"
        )
    return int(match.group(1)), int(match.group(2)) - 1
