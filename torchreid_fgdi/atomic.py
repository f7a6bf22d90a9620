"""Files written whole or not at all: a temporary file beside the target, then a rename.

A process killed mid-write (SIGKILL, OOM, a pre-empted node) leaves the previous version of the
file, never a truncated one that fails to load hours later.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """Calls ``write(tmp_path)``, then renames the result onto `path` (same folder, same file system)."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save(obj, path: str) -> str:
    """`torch.save`, atomically."""
    import torch

    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_text(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return write_atomically(path, write)
