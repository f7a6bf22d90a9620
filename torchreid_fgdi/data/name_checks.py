"""File names and list files that torchreid's dataset classes would misread or crash on.

torchreid parses Market-1501 / DukeMTMC-reID identities and cameras with a regex searched over
the whole path (a stray file fails with ``'NoneType' object has no attribute 'groups'``, a
folder named like ``run_c1`` silently relabels every image) and checks ranges with bare asserts;
MSMT17's list files fail with an unpacking error on a blank line. These checks run before any
work and name each offending file (or list line) with what was expected.
"""

from __future__ import annotations

import os
import os.path as osp
import re
from collections.abc import Callable

_PID_CAM = re.compile(r"([-\d]+)_c(\d)")  # torchreid's pattern for Market-1501 and DukeMTMC-reID

# The layouts torchreid's classes read; `readiness` checks the same paths for presence.
MARKET1501_DIR = "market1501/Market-1501-v15.09.15"
DUKEMTMCREID_DIR = "dukemtmc-reid/DukeMTMC-reID"
MARKET_STYLE_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
# MSMT17's releases under msmt17/: (release folder, train image folder, test image folder).
MSMT17_RELEASES = (("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2"))
MSMT17_LISTS = ("train", "val", "query", "gallery")  # list_<name>.txt; train and val list train images
_EXAMPLE = "0002_c1s1_000451_03.jpg (<pid>_c<camera>..., pid -1 for junk)"


def pid_cam_problems(folder: str, max_pid: int | None, max_cam: int) -> list[str]:
    problems = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jpg") or name.startswith("."):  # what torchreid's glob("*.jpg") reads
            continue
        path = osp.join(folder, name)
        own = _PID_CAM.match(name)
        if own is None:
            problems.append(f"{path}: the name does not parse as {_EXAMPLE}; rename or remove it")
            continue
        first = _PID_CAM.search(path)
        if first.span() != (len(path) - len(name), len(path) - len(name) + own.end()):
            problems.append(
                f"{path}: torchreid reads the pid and camera from the whole path and finds {first.group(0)!r} "
                "in a folder name first; rename that folder"
            )
            continue
        pid, cam = int(own.group(1)), int(own.group(2))
        if pid != -1 and (pid < 0 or (max_pid is not None and pid > max_pid)):
            problems.append(f"{path}: pid {pid} outside 0..{max_pid} (or -1 for junk)")
        if pid != -1 and not 1 <= cam <= max_cam:
            problems.append(f"{path}: camera {cam} outside 1..{max_cam}")
    return problems


def _image_folders(root: str, base: str) -> list[str]:
    return [osp.join(root, base, d) for d in MARKET_STYLE_FOLDERS]


def market1501_problems(root: str) -> list[str]:
    root = osp.abspath(osp.expanduser(root))  # torchreid's regex sees the absolute path
    base = MARKET1501_DIR
    if not osp.isdir(osp.join(root, base)):
        base = "market1501"
    return [p for f in _image_folders(root, base) if osp.isdir(f) for p in pid_cam_problems(f, 1501, 6)]


def dukemtmcreid_problems(root: str) -> list[str]:
    root = osp.abspath(osp.expanduser(root))
    folders = _image_folders(root, DUKEMTMCREID_DIR)
    return [p for f in folders if osp.isdir(f) for p in pid_cam_problems(f, None, 8)]


def msmt17_list_problems(list_path: str, image_dir: str) -> list[str]:
    problems = []
    with open(list_path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        where = f"{list_path} line {number}"
        fields = line.split(" ")
        if not line.strip():
            problems.append(f"{where} is blank; torchreid cannot skip it: delete the line")
        elif len(fields) != 2 or not fields[1].strip().isdigit():
            problems.append(f"{where}: expected '<image path> <pid>' (one space), got {line.rstrip()!r}")
        elif len(fields[0].split("_")) < 3 or not fields[0].split("_")[2].isdigit():
            problems.append(f"{where}: {fields[0]!r} has no camera number as its third '_' field")
        elif not osp.isfile(osp.join(image_dir, fields[0])):
            problems.append(f"{where}: {osp.join(image_dir, fields[0])} does not exist")
    return problems


def msmt17_problems(root: str) -> list[str]:
    for release, train, test in MSMT17_RELEASES:
        base = osp.join(root, "msmt17", release)
        if osp.isdir(osp.join(base, train)):
            folders = dict(zip(MSMT17_LISTS, (train, train, test, test)))
            return [
                p
                for name, folder in folders.items()
                for p in msmt17_list_problems(osp.join(base, f"list_{name}.txt"), osp.join(base, folder))
            ]
    return []


NAME_CHECKS: dict[str, Callable[[str], list[str]]] = {
    "market1501": market1501_problems,
    "dukemtmcreid": dukemtmcreid_problems,
    "msmt17": msmt17_problems,
}
