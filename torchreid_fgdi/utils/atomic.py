"""Files written whole or not at all: a temporary file beside the target, then a rename.

A process killed mid-write (SIGKILL, OOM, a pre-empted node) leaves the previous version of the
file, never a truncated one that fails to load hours later. A write that fails (a full disk, a
file-size limit) says which of the two it was; torch's own message is an `inline_container.cc`
assertion that names neither.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import resource
import shutil
import tempfile
from collections.abc import Callable

from ..errors import ConfigError, WriteError

_TEMPORARY = re.compile(r"\.tmp(\d+)$")
_ROOM = 64 << 20  # bytes: less free space than this after a failed write means the disk was full


def storage_problem(folder: str, err: BaseException | None = None) -> str | None:
    """Why writing into `folder` failed for lack of room, if it did: a full disk (the storage's error
    `err` says so, or little room is left: torch's write errors carry no errno) or a file-size limit."""
    stat = os.statvfs(folder or ".")
    free = stat.f_bavail * stat.f_frsize
    if free < _ROOM or getattr(err, "errno", None) == errno.ENOSPC:
        return (
            f"the disk holding {folder or '.'} is full ({free / 2**20:.0f} MiB free): free space or use another folder"
        )
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"the process's file-size limit (ulimit -f) is {limit} bytes: raise it"
    return None


def incomplete_log(path: str, err: OSError, missing: str) -> WriteError:
    """The one line that ends a run whose log `path` could not take every line (`err`: the first
    write that failed). The run went on: its checkpoints and results are written whole or not at
    all, and a failed one stops it on its own. `missing` says what the log misses and where it is."""
    problem = storage_problem(os.path.dirname(path), err) or str(err)
    return WriteError(
        f"could not complete the log {path}: {problem}; the run's checkpoints and results are intact "
        f"(each is written whole or not at all), only {missing}"
    )


def _folder_problem(folder: str) -> tuple[str, str] | None:
    """Why files cannot be written into `folder` (made if missing), if they cannot: the problem, and
    whether it is a file in the way (else no permission or a file system that takes no files)."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return ("is a file" if existing == os.path.abspath(folder) else f"is under {existing}, which is a file"), True
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".write-check")
    except OSError as err:
        return f"cannot be written ({existing}: {err.strerror})", False
    os.close(handle)
    os.remove(probe)
    return None


def check_output_folder(folder: str, flag: str) -> None:
    """Refuses, before any work, a folder files cannot be written into (`flag` names the option that
    gave it): a file where it would be, or no permission to write where it is or would be made."""
    found = _folder_problem(folder)
    if found:
        problem, file_in_the_way = found
        fix = "pass a folder (it is made if missing)" if file_in_the_way else "pass a folder you can write to"
        raise ConfigError(f"{flag} {folder} {problem}: {fix}")


def check_output_file(path: str, flag: str) -> None:
    """Refuses, before any work, a file `path` cannot be written to (`flag` names the option that gave
    it): a folder or a non-regular file (a pipe, a device) of that name, or a folder for it that
    `check_output_folder` refuses. An output written at the end would otherwise fail after the work."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a folder: pass a file path (e.g. {os.path.join(path, 'index.pt')})")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ConfigError(f"{flag} {path} is not a regular file (a pipe or a device?): pass a file path")
    found = _folder_problem(os.path.dirname(os.path.abspath(path)))
    if found:
        raise ConfigError(f"{flag} {path} cannot be written: its folder {found[0]}; pass a path you can write to")


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
        if os.path.isdir(path):
            problem = "a folder of that name is in the way: move it away or remove it"
        else:
            problem = storage_problem(folder, err)
        if problem is None:
            raise
        kept = "the previous file is intact" if os.path.isfile(path) else "nothing was written"
        raise WriteError(f"could not write {path}: {problem}; {kept}") from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _writer_alive(temporary: str) -> bool:
    """Whether the process whose pid names `temporary` still runs, so its write may be under way (this
    process, which is not writing it while it cleans up, does not count)."""
    pid = int(_TEMPORARY.search(temporary).group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def remove_temporaries(*folders: str) -> list[str]:
    """Deletes the temporary files that killed writes left in each of `folders` itself, and says so; the
    paths removed. Call it while no other process writes there (e.g. holding the folder's lock); a
    temporary whose writer still runs is left alone all the same."""
    stale = [p for folder in folders for p in glob.glob(os.path.join(glob.escape(folder), "*.tmp*"))]
    stale = [p for p in stale if _TEMPORARY.search(p) and os.path.isfile(p) and not _writer_alive(p)]
    for path in stale:
        os.remove(path)
    if stale:
        print(f"=> Removed {len(stale)} temporary file(s) left by a killed write: {', '.join(stale)}")
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
