"""Finding images that cannot be read: a quick look at every file before any work, and a full
decode for ``data.skip_unreadable_images``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from ..integration.compat import read_image

# The bytes a whole file of each format ends with (JPEG's end-of-image marker may be followed
# by a little padding or camera data, so it is looked for near the end).
_ENDINGS = {"JPEG": (b"\xff\xd9", 4096), "PNG": (b"IEND", 64)}


def _problem(path: str) -> str | None:
    try:
        read_image(path)
    except OSError as err:
        return str(err)
    return None


def _quick_problem(path: str) -> str | None:
    """Why `path` cannot be a whole image, from its type, header and last bytes (no decoding)."""
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            return "not a regular file (a named pipe, device or folder)"
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            kind = img.format
        ending = _ENDINGS.get(kind)
        if ending:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - ending[1]))
                if ending[0] not in f.read():
                    return f"truncated {kind} (its end marker is missing)"
    except Image.DecompressionBombError as err:
        return f"implausibly large: {err}"
    except OSError as err:
        return f"not an image PIL can read ({err})"
    return None


def _scan(check, paths, workers: int) -> dict[str, str]:
    paths = sorted(set(paths))
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        problems = pool.map(check, paths)
    return {path: why for path, why in zip(paths, problems) if why}


def unreadable_images(paths: Iterable[str], workers: int = 2) -> dict[str, str]:
    """{path: why} for every path PIL cannot fully decode (missing, empty, truncated, not an image).

    Decoding releases the GIL, so threads scan in parallel.
    """
    return _scan(_problem, paths, workers)


def damaged_images(paths: Iterable[str], workers: int = 2) -> dict[str, str]:
    """{path: why} for files that are surely not whole images (seconds for a dataset, unlike a full decode)."""
    return _scan(_quick_problem, paths, workers)
