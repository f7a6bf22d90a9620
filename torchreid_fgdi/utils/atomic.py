"""Files written whole or not at all: a temporary file beside the target, then a rename.

A process killed mid-write (SIGKILL, OOM, a pre-empted node) leaves the previous version of the
file, never a truncated one that fails to load hours later. A write that fails (a full disk, a
file-size limit) says which of the two it was; torch's own message is an `inline_container.cc`
assertion that names neither.
"""

from __future__ import annotations

import glob
import os
import re
import resource
import shutil
import tempfile
from collections.abc import Callable

from ..errors import ConfigError, WriteError

_TEMPORARY = re.compile(r"\.tmp\d+$")
_ROOM = 64 << 20  # bytes: less free space than this after a failed write means the disk was full


def _storage_problem(folder: str) -> str | None:
    """Why writing into `folder` fails for lack of room, if it does: a full disk or a file-size limit."""
    stat = os.statvfs(folder or ".")
    free = stat.f_bavail * stat.f_frsize
    if free < _ROOM:
        return (
            f"the disk holding {folder or '.'} is full ({free / 2**20:.0f} MiB free): free space or use another folder"
        )
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"the process's file-size limit (ulimit -f) is {limit} bytes: raise it"
    return None


def check_output_folder(folder: str, flag: str) -> None:
    """Refuses, before any work, a folder files cannot be written into (`flag` names the option that
    gave it): a file where it would be, or no permission to write where it is or would be made."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(folder) else f"is under {existing}, which is a file"
        raise ConfigError(f"{flag} {folder} {where}: pass a folder (it is made if missing)")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".write-check")
    except OSError as err:
        raise ConfigError(
            f"{flag} {folder} cannot be written ({existing}: {err.strerror}): pass a folder you can write to"
        ) from err
    os.close(handle)
    os.remove(probe)


def write_atomically(path: str, write: Callable[[str], None]) -> str:
    """Calls ``write(tmp_path)``, then renames the result onto `path` (same folder, same file system)."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        problem = _storage_problem(folder)
        if problem is None:
            raise
        kept = "the previous file is intact" if os.path.isfile(path) else "nothing was written"
        raise WriteError(f"could not write {path}: {problem}; {kept}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def remove_temporaries(folder: str) -> list[str]:
    """Deletes the temporary files that killed writes left in `folder` itself (call it only while no
    other process writes there, e.g. holding the run's lock); the paths removed."""
    stale = glob.glob(os.path.join(glob.escape(folder), "*.tmp*"))
    stale = [p for p in stale if _TEMPORARY.search(p) and os.path.isfile(p)]
    for path in stale:
        os.remove(path)
    return stale


def save(obj: object, path: str) -> str:
    """`torch.save`, atomically."""
    import torch

    return write_atomically(path, lambda tmp: torch.save(obj, tmp))


def link(source: str, path: str) -> str:
    """`path` becomes another name of the file `source` (a copy where the file system has no hard links)."""

    def write(tmp: str) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return write_atomically(path, write)


def write_text(path: str, text: str) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    return write_atomically(path, write)
